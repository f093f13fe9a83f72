"""`msm plan`: does a config fit the chips, and how fast can a step be, before queueing for them.

The real train step (`StepFunctions`, with the run's shardings and donation) is lowered on
ShapeDtypeStructs that carry the mesh's shardings and compiled ahead of time, so no state is ever
allocated. Per-device bytes:

- parameters, optimizer state, batch: exact, from each leaf's shard shape under its sharding;
- activations and temporaries: `Compiled.memory_analysis().temp_size_in_bytes`, XLA's buffer
  assignment for everything the step keeps alive besides its arguments and outputs (the
  activations saved for the backward pass, gradients, workspace);
- peak = arguments + outputs - donated aliases + temporaries (what XLA's buffer assignment needs).

The program is compiled by XLA:CPU over N simulated CPU devices (`--xla_force_host_platform_device_
count=N`, set before JAX starts: the command re-executes itself when JAX is already running with
fewer CPU devices). A concrete mesh is needed because memory analysis comes from `.compile()`;
`jax.sharding.AbstractMesh` lowers but cannot compile. State bytes transfer to TPU/GPU exactly;
temporaries are XLA:CPU's fusion and scheduling, so on an accelerator treat them as an estimate
(tests/test_plan.py checks the CPU figures against a real run on configs/tiny.py). The command
plans with `model.materialize_grads` off: it is a CPU-only speed-up ("auto" leaves it off on
TPU/GPU) that makes XLA keep extra gradients.

FLOPs per step are the analytic model FLOPs of `flops.py` (what MFU counts) and XLA's own count
of the compiled per-device program (`cost_analysis()["flops"]` x devices, which includes the
rematerialised forward and the optimizer; XLA counts a scanned layer body once, so with
`scan_layers` it undercounts by about the layer count). The MFU-bound step time is analytic FLOPs
/ (devices x the accelerator's bf16 peak): no real step is faster.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

import jax
import numpy as np
from jax._src import xla_bridge

from msm_jax import config as config_lib
from msm_jax import sharding as shd
from msm_jax.checkpoint import abstract_like
from msm_jax.data.packing import FEATURES
from msm_jax.flops import train_flops_per_token
from msm_jax.model import ModelDef
from msm_jax.train_step import StepFunctions
from msm_jax.trainer import _abstract_state

# bf16 dense peak FLOP/s and HBM bytes per chip. Sources: cloud.google.com/tpu/docs/{v4,v5e,v5p,
# v6e} (system architecture tables: 275 / 197 / 459 / 918 TFLOP/s; 32 / 16 / 95 / 32 GiB), NVIDIA
# A100 datasheet (SXM 80GB: 312 TFLOP/s dense), H100 and H200 datasheets (SXM: 989 TFLOP/s dense,
# 80 GB / 141 GB).
GiB, GB = 2 ** 30, 10 ** 9
ACCELERATORS = {
    "v4": (275e12, 32 * GiB),
    "v5e": (197e12, 16 * GiB),
    "v5p": (459e12, 95 * GiB),
    "v6e": (918e12, 32 * GiB),
    "a100": (312e12, 80 * GB),
    "h100": (989e12, 80 * GB),
    "h200": (989e12, 141 * GB),
}
HEADROOM = 0.9  # leave ~10% of HBM to the runtime, collectives' buffers and fragmentation
_CHILD_ENV = "_MSM_PLAN_CHILD"


def _shard_bytes(shapes, shardings) -> int:
  """Bytes one device holds of a tree of arrays laid out by `shardings`."""
  total = 0
  for x, s in zip(jax.tree.leaves(shapes), jax.tree.leaves(shardings)):
    total += math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
  return total


def abstract_batch(cfg, sharding) -> dict:
  shape = (int(cfg.batch_size), int(cfg.seq_len))
  return {k: jax.ShapeDtypeStruct(shape, np.int32, sharding=sharding) for k in FEATURES}


def compile_step(cfg, devices):
  """The train step compiled for `cfg.mesh` over `devices` on abstract inputs.
  Returns (StepFunctions, abstract state, abstract batch, Compiled)."""
  mesh = shd.make_mesh(cfg, devices)
  model_def = ModelDef(cfg.model)
  steps = StepFunctions(cfg, model_def, mesh)
  state = abstract_like(_abstract_state(model_def, steps.tx), steps.state_shardings)
  batch = abstract_batch(cfg, shd.batch_sharding(mesh))
  return steps, state, batch, steps.lower_train(state, batch).compile()


def plan(cfg, devices, accelerator: str = "v5p") -> dict:
  """Per-device memory, FLOPs and the MFU-bound step time of one train step of `cfg`."""
  n = len(devices)
  config_lib.validate(cfg, n)
  t0 = time.perf_counter()
  steps, state, batch, compiled = compile_step(cfg, devices)
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  sh = steps.state_shardings
  params = _shard_bytes(state.params, sh.params)
  opt = _shard_bytes(state.opt_state, sh.opt_state)
  tokens = int(cfg.batch_size) * int(cfg.seq_len)
  analytic = train_flops_per_token(cfg.model, int(cfg.seq_len)) * tokens
  peak_flops, hbm = ACCELERATORS[accelerator]
  out = {
      "devices": n, "mesh": config_lib.mesh_shape(cfg, n), "accelerator": accelerator,
      "param_count": steps.model_def.param_count(),
      "params_bytes": params, "opt_state_bytes": opt,
      "batch_bytes": _shard_bytes(batch, [s.sharding for s in batch.values()]),
      "argument_bytes": mem.argument_size_in_bytes, "output_bytes": mem.output_size_in_bytes,
      "alias_bytes": mem.alias_size_in_bytes, "temp_bytes": mem.temp_size_in_bytes,
      "peak_bytes": (mem.argument_size_in_bytes + mem.output_size_in_bytes
                     - mem.alias_size_in_bytes + mem.temp_size_in_bytes),
      "hbm_bytes": hbm, "flops_analytic": analytic,
      "flops_xla": float(cost.get("flops", 0.0)) * n if cost else None,
      "tokens_per_step": tokens, "step_s_at_100_mfu": analytic / (n * peak_flops),
      "compile_s": compile_s,
  }
  out["suggestions"] = suggest(cfg, out)
  return out


def fits(p) -> bool:
  return p["peak_bytes"] <= HEADROOM * p["hbm_bytes"]


def suggest(cfg, p) -> list[str]:
  """What to change when the peak exceeds the per-device HBM budget (most effective first)."""
  if fits(p):
    return []
  budget = HEADROOM * p["hbm_bytes"]
  mesh, n, out = p["mesh"], p["devices"], []
  state = p["params_bytes"] + p["opt_state_bytes"]
  if state > 0.5 * budget and mesh["fsdp"] * mesh["tensor"] < n:
    out.append(f"parameters + optimizer state take {_fmt(state)} per device: shard them over a "
               f"larger fsdp axis, e.g. --mesh data=1,fsdp={n // mesh['tensor']},"
               f"tensor={mesh['tensor']}")
  elif state > budget:
    out.append(f"parameters + optimizer state alone ({_fmt(state)} per device) exceed the "
               "budget: more chips, a tensor axis, or LoRA")
  if cfg.model.remat != "full":
    out.append("activations dominate the step: rematerialise the layers "
               "(--config.model.remat=full" + (", or save_dots to keep the matmul outputs)"
                                               if cfg.model.remat == "none" else ")"))
  free, mb = budget - p["argument_bytes"], int(cfg.microbatches)
  shards = mesh["data"] * mesh["fsdp"]
  k = mb
  while (free > 0 and p["temp_bytes"] * mb / k > free and cfg.batch_size % (2 * k) == 0
         and (cfg.batch_size // (2 * k)) % shards == 0):
    k *= 2
  if k != mb:
    out.append(f"accumulate gradients over microbatches: --config.microbatches={k} "
               f"(temporaries scale about 1/microbatches: ~{_fmt(p['temp_bytes'] * mb / k)})")
  elif cfg.batch_size // mb == shards:
    t = 4 * mesh["tensor"]
    out.append(f"each device already holds one row of {cfg.seq_len} tokens (the floor for "
               f"data/fsdp sharding): split rows over a tensor axis with a smaller global batch "
               f"(--mesh data=1,fsdp={max(n // t, 1)},tensor={t} "
               f"--config.batch_size={max(cfg.batch_size * mesh['tensor'] // t, 1)}), a "
               f"shorter config.seq_len, or more chips")
  return out


def _count(n: int) -> str:
  return f"{n / 1e9:.3g}B" if n >= 1e9 else f"{n / 1e6:.3g}M"


def _fmt(b: float) -> str:
  return f"{b / GiB:.2f} GiB" if b >= GiB / 10 else f"{b / 2 ** 20:.2f} MiB"


def format_plan(cfg, p) -> str:
  m = p["mesh"]
  hbm = p["hbm_bytes"]
  lines = [
      f"plan: {_count(p['param_count'])} parameters on {p['devices']} devices "
      f"(data={m['data']}, fsdp={m['fsdp']}, tensor={m['tensor']}), batch {cfg.batch_size} x "
      f"{cfg.seq_len} tokens, microbatches {cfg.microbatches}, remat {cfg.model.remat}, "
      f"{cfg.model.param_dtype} params / {cfg.model.compute_dtype} compute "
      f"(compiled in {p['compile_s']:.1f} s)",
      "per device:",
      f"  parameters               {_fmt(p['params_bytes']):>12}",
      f"  optimizer state          {_fmt(p['opt_state_bytes']):>12}",
      f"  batch                    {_fmt(p['batch_bytes']):>12}",
      f"  activations/temporaries  {_fmt(p['temp_bytes']):>12}   (XLA memory analysis)",
      f"  peak                     {_fmt(p['peak_bytes']):>12}   of {_fmt(hbm)} HBM on "
      f"{p['accelerator']} ({100 * p['peak_bytes'] / hbm:.0f}%)",
      f"FLOPs per step: {p['flops_analytic']:.3e} analytic (6N + attention)"
      + (f", {p['flops_xla']:.3e} XLA cost analysis" if p["flops_xla"] else ""),
      f"MFU-bound step time on {p['devices']} x {p['accelerator']}: "
      f"{p['step_s_at_100_mfu']:.3g} s at 100% MFU, {p['step_s_at_100_mfu'] / 0.4:.3g} s at 40% "
      f"({p['tokens_per_step'] / p['step_s_at_100_mfu'] / p['devices']:.4g} tokens/s/chip at 100%)",
  ]
  if not cfg.model.scan_layers and cfg.model.remat != "none":
    lines.append("note: with scan_layers=False XLA:CPU's schedule may keep the activations remat "
                 "would drop; plan with scan_layers=True")
  if not fits(p):
    lines.append(f"DOES NOT FIT ({HEADROOM:.0%} of HBM budgeted); try:")
    lines += [f"  - {s}" for s in p["suggestions"]]
  else:
    lines.append(f"fits within {HEADROOM:.0%} of HBM")
  return "\n".join(lines)


def parse_mesh(text: str) -> dict[str, int]:
  """'data=2,fsdp=16,tensor=2' -> sizes (-1 = the rest of the devices)."""
  sizes = {}
  for part in filter(None, text.split(",")):
    key, sep, value = part.partition("=")
    if key not in ("data", "fsdp", "tensor") or not sep or not re.fullmatch(r"-?\d+", value):
      raise SystemExit(f"msm plan: --mesh: expected axis=size with axis data|fsdp|tensor, "
                       f"got {part!r}")
    sizes[key] = int(value)
  return sizes


def _device_count(cfg, args) -> int:
  if args.devices:
    return args.devices
  sizes = [int(cfg.mesh[a]) for a in ("data", "fsdp", "tensor")]
  if -1 in sizes:
    raise SystemExit("msm plan: give --devices N, or every --mesh axis (no -1)")
  return math.prod(sizes)


def _xla_flags(n: int) -> str:
  """XLA_FLAGS with the simulated CPU device count set to n."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", ""))
  return f"{flags} --xla_force_host_platform_device_count={n}".strip()


def _cpu_devices(n: int):
  """n CPU devices, or None when this process has fewer (the caller re-executes)."""
  if not xla_bridge.backends_are_initialized():  # not too late: JAX reads XLA_FLAGS at start-up
    os.environ["XLA_FLAGS"] = _xla_flags(n)
  devices = jax.devices("cpu")
  return devices[:n] if len(devices) >= n else None


def _reexec(args) -> int:
  argv = [sys.executable, "-m", "msm_jax.plan", "--config", args.config,
          "--accelerator", args.accelerator, "--devices", str(args.devices)]
  if args.mesh:
    argv += ["--mesh", args.mesh]
  if args.stage:
    argv += ["--stage", args.stage]
  if args.json:
    argv += ["--json"]
  argv += [f"--config.{k}={v}" for k, v in args.config_overrides.items()]
  env = {**os.environ, _CHILD_ENV: "1", "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": _xla_flags(args.devices)}
  return subprocess.call(argv, env=env)


def run_plan(args) -> int:
  try:
    return _run_plan(args)
  except config_lib.ConfigError as e:
    raise SystemExit(f"msm plan: {e}") from None


def _run_plan(args) -> int:
  cfg = config_lib.load_config(args.config)
  config_lib.apply_overrides(cfg, getattr(args, "config_overrides", {}))
  if args.stage:
    cfg.stage = args.stage
  if args.mesh:
    cfg.mesh.update(parse_mesh(args.mesh))
  if cfg.model.materialize_grads in (True, "auto"):
    with cfg.model.ignore_type():  # the chips planned for run without it (see the docstring)
      cfg.model.materialize_grads = False
  args.devices = _device_count(cfg, args)
  devices = _cpu_devices(args.devices)
  if devices is None:
    if os.environ.get(_CHILD_ENV):
      raise SystemExit(f"msm plan: could not simulate {args.devices} CPU devices")
    return _reexec(args)
  p = plan(cfg, devices, args.accelerator)
  print(json.dumps(p) if args.json else format_plan(cfg, p), flush=True)
  return 0


def add_plan_parser(subparsers) -> None:
  parser = subparsers.add_parser(
      "plan", help="compile the train step for a mesh without allocating it: memory, FLOPs, "
      "step time",
      description="Per-device memory, FLOPs and the MFU-bound step time of CONFIG's train step "
      "on a mesh of N devices, from an ahead-of-time compile on N simulated CPU devices.")
  parser.add_argument("--config", required=True, help="a config file (configs/...)")
  parser.add_argument("--mesh", default="", help="data=..,fsdp=..,tensor=.. (default: config's)")
  parser.add_argument("--devices", type=int, default=0,
                      help="number of chips (default: the product of the mesh axes)")
  parser.add_argument("--accelerator", default="v5p", choices=sorted(ACCELERATORS),
                      help="whose bf16 peak and HBM to plan against")
  parser.add_argument("--stage", default="", choices=("", "pretrain", "midtrain", "finetune"))
  parser.add_argument("--json", action="store_true", help="print one JSON object instead")
  parser.set_defaults(func=run_plan)


def main(argv=None) -> int:
  from msm_jax.cli import split_config_overrides
  argv, overrides = split_config_overrides(list(sys.argv[1:] if argv is None else argv))
  parser = argparse.ArgumentParser(prog="msm plan")
  sub = parser.add_subparsers()
  add_plan_parser(sub)
  args = parser.parse_args(["plan", *argv])
  args.config_overrides = overrides
  return run_plan(args)


if __name__ == "__main__":
  sys.exit(main())
