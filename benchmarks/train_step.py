"""Train-step speed: model FLOP/s, MFU and tokens/s of the compiled f32 train step on this machine.

Prints ONE JSON line: the measured f32 matmul peak (best `jnp.dot` over a few sizes and repeats)
and, per shape, the achieved model FLOP/s of the project's own jitted train step (forward +
backward + AdamW, `StepFunctions.train`), its ratio to that peak (MFU) and tokens/s. FLOPs per
token come from `msm_jax.flops.train_flops_per_token` (6 x matmul params + attention, see there).

  .venv/bin/python benchmarks/train_step.py                      # S1 and S2, defaults
  .venv/bin/python benchmarks/train_step.py --shape S2 --steps 5
  .venv/bin/python benchmarks/train_step.py --shape S2 --set model.materialize_grads=False
  # A/B in one process (steps interleaved, same init and batches; reports ratio and loss diff):
  .venv/bin/python benchmarks/train_step.py --shape S2 --vs model.materialize_grads=False
  .venv/bin/python benchmarks/train_step.py --xla-flags=--xla_cpu_use_xnnpack=true --shape S2

The machine is shared and 2-core, so timings are noisy: compare variants with --vs (one process,
interleaved steps) rather than across runs. See benchmarks/README.md for results.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

SHAPES = {
    # name: run-config keys and model-shape keys. mlp_dim ~ 8/3 d_model: the SwiGLU MLP costs
    # about what a 4*d_model two-matrix MLP does.
    "S1": dict(batch_size=16, seq_len=256,
               model=dict(vocab_size=4096, d_model=256, n_layers=4, n_heads=4, n_kv_heads=4,
                          mlp_dim=688)),
    "S2": dict(batch_size=8, seq_len=256,
               model=dict(vocab_size=8192, d_model=512, n_layers=8, n_heads=8, n_kv_heads=8,
                          mlp_dim=1368)),
}


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shape", action="append", choices=sorted(SHAPES),
                 help="shape(s) to run (repeatable); default: all")
  p.add_argument("--steps", type=int, default=10, help="timed steps per shape (median reported)")
  p.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override, e.g. model.materialize_grads=False (repeatable)")
  p.add_argument("--vs", action="append", default=[], metavar="KEY=VALUE",
                 help="also run a variant with these extra overrides, interleaved step by step "
                      "with the base; reports both, their speed ratio and the loss difference")
  p.add_argument("--peak-sizes", default="2048,4096", help="matmul sizes for the peak probe")
  p.add_argument("--peak-repeats", type=int, default=5)
  p.add_argument("--no-peak", action="store_true", help="skip the probe (MFU is then null)")
  p.add_argument("--xla-flags", default="", help="appended to XLA_FLAGS before jax starts")
  p.add_argument("--malloc", choices=("retain", "system"), default="retain",
                 help="retain: glibc keeps freed memory in one heap (no mmap, no trim), so the "
                      "step's large temporaries are not page-faulted in afresh every step; "
                      "system: glibc defaults")
  p.add_argument("--dump-hlo", default="", metavar="DIR",
                 help="write each compiled train step's optimized HLO text here")
  return p.parse_args(argv)


def matmul_peak(sizes, repeats):
  """Best f32 FLOP/s of a jitted n x n jnp.dot, per size: by wall clock (best of `repeats`) and
  by CPU time (median CPU seconds / cores, the contention-robust view)."""
  import statistics
  import jax
  import jax.numpy as jnp
  f = jax.jit(jnp.dot)
  ncpu = len(os.sched_getaffinity(0))
  wall, cpu = {}, {}
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f(a, b).block_until_ready()
    ts, cs = [], []
    for _ in range(repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      f(a, b).block_until_ready()
      ts.append(time.perf_counter() - t0)
      cs.append(time.process_time() - c0)
    wall[str(n)] = 2.0 * n ** 3 / min(ts)
    cpu[str(n)] = 2.0 * n ** 3 / (statistics.median(cs) / ncpu)
    del a, b
  return wall, cpu


def make_config(shape, overrides):
  from msm_jax import config as config_lib
  cfg = config_lib.base_config()
  spec = SHAPES[shape]
  cfg.batch_size, cfg.seq_len = spec["batch_size"], spec["seq_len"]
  cfg.model.update(spec["model"])
  cfg.model.tie_embeddings = True
  cfg.model.compute_dtype = cfg.model.param_dtype = "float32"
  cfg.stage = "pretrain"
  cfg.steps, cfg.warmup_steps = 1000, 10
  config_lib.apply_overrides(cfg, dict(kv.split("=", 1) for kv in overrides))
  import jax
  config_lib.validate(cfg, len(jax.devices()))
  return cfg


def make_batches(cfg, n=4, seed=0):
  import numpy as np
  rng = np.random.default_rng(seed)
  b, t, v = cfg.batch_size, cfg.seq_len, cfg.model.vocab_size
  out = []
  for _ in range(n):
    tokens = rng.integers(1, v, size=(b, t + 1), dtype=np.int32)
    out.append({"inputs": tokens[:, :-1].copy(), "targets": tokens[:, 1:].copy(),
                "segment_ids": np.ones((b, t), np.int32),
                "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
                "loss_mask": np.ones((b, t), np.int32)})
  return out


class Runner:
  """One compiled train step of one config, with its own state."""

  def __init__(self, cfg, dump_dir="", tag=""):
    import jax
    from msm_jax import flops, model, sharding, train_step
    self.cfg = cfg
    self.fns = train_step.StepFunctions(cfg, model.ModelDef(cfg.model), sharding.make_mesh(cfg))
    self.state = self.fns.init_state(int(cfg.seed))
    batch_sh = sharding.batch_sharding(self.fns.mesh)
    self.batches = [jax.device_put(b, batch_sh) for b in make_batches(cfg)]
    self.flops_per_token = flops.train_flops_per_token(cfg.model, cfg.seq_len)
    self.tokens_per_step = cfg.batch_size * cfg.seq_len
    t0 = time.perf_counter()
    with sharding.activate(self.fns.mesh):
      compiled = self.fns._train.lower(self.state, self.batches[0]).compile()
    self.compile_s = time.perf_counter() - t0
    if dump_dir:
      Path(dump_dir).mkdir(parents=True, exist_ok=True)
      Path(dump_dir, f"{tag}.hlo.txt").write_text(compiled.as_text())
    self.i, self.times, self.cpu_times, self.losses = 0, [], [], []

  def step(self, timed=True):
    batch = self.batches[self.i % len(self.batches)]
    self.i += 1
    t0, c0 = time.perf_counter(), time.process_time()
    self.state, metrics = self.fns.train(self.state, batch)
    loss = float(metrics["loss"])  # blocks until the step is done
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    self.losses.append(loss)
    if timed:
      self.times.append(dt)
      self.cpu_times.append(dc)

  def result(self, peak, peak_cpu):
    import statistics
    flops = self.flops_per_token * self.tokens_per_step
    med, best = statistics.median(self.times), min(self.times)
    cpu = statistics.median(self.cpu_times)
    ncpu = len(os.sched_getaffinity(0))
    return {
        # The headline numbers: median wall-clock step time after warmup.
        "model_flops_per_sec": round(flops / med / 1e9, 2) * 1e9,
        "mfu": round(flops / med / peak, 4) if peak else None,
        "tokens_per_sec": round(self.tokens_per_step / med, 1),
        # Noise-robust views on a shared machine: the fastest step, and the work measured in
        # CPU time (process CPU seconds per step / cores), which other processes barely inflate.
        "mfu_best_step": round(flops / best / peak, 4) if peak else None,
        "mfu_cpu_time": round(flops / (cpu / ncpu) / peak_cpu, 4) if peak_cpu else None,
        "step_s_median": round(med, 4), "step_s_min": round(best, 4),
        "cpu_s_per_step_median": round(cpu, 4), "steps": len(self.times),
        "compile_s": round(self.compile_s, 1), "flops_per_token": self.flops_per_token,
        "loss_last": self.losses[-1]}


def main(argv=None):
  args = parse_args(argv)
  if args.xla_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + args.xla_flags).strip()
  sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
  from msm_jax.cli import retain_malloc  # imports no jax
  malloc = "system"
  if args.malloc == "retain":
    malloc = "retain" if retain_malloc(force=True) else "system (mallopt failed)"
  import jax

  out = {"benchmark": "train_step", "backend": jax.default_backend(),
         "devices": len(jax.devices()), "cpu_count": os.cpu_count(),
         "xla_flags": os.environ.get("XLA_FLAGS", ""), "malloc": malloc,
         "overrides": args.set, "loadavg_1min_start": round(os.getloadavg()[0], 2)}
  peak = peak_cpu = None
  if not args.no_peak:
    wall, cpu = matmul_peak([int(n) for n in args.peak_sizes.split(",")], args.peak_repeats)
    peak, peak_cpu = max(wall.values()), max(cpu.values())
    out["matmul_peak_flops"] = round(peak / 1e9, 2) * 1e9
    out["matmul_peak_gflops_by_size"] = {k: round(v / 1e9, 2) for k, v in wall.items()}
    out["matmul_peak_cpu_time_gflops_by_size"] = {k: round(v / 1e9, 2) for k, v in cpu.items()}

  for shape in args.shape or list(SHAPES):
    base = Runner(make_config(shape, args.set), args.dump_hlo, f"{shape}_base")
    runners = [base]
    if args.vs:
      runners.append(Runner(make_config(shape, args.set + args.vs), args.dump_hlo, f"{shape}_vs"))
    for _ in range(args.warmup):
      for r in runners:
        r.step(timed=False)
    for _ in range(args.steps):  # interleaved, so a noisy neighbour hits every variant alike
      for r in runners:
        r.step()
    res = base.result(peak, peak_cpu)
    res.update({k: SHAPES[shape][k] for k in ("batch_size", "seq_len")}, **SHAPES[shape]["model"])
    if args.vs:
      other = runners[1].result(peak, peak_cpu)
      res["vs"] = {"overrides": args.vs, **other,
                   "speed_ratio_base_over_vs": round(other["step_s_median"] / res["step_s_median"], 3),
                   "cpu_ratio_base_over_vs": round(other["cpu_s_per_step_median"]
                                                   / res["cpu_s_per_step_median"], 3),
                   "max_abs_loss_diff": max(abs(a - b) for a, b in zip(base.losses,
                                                                       runners[1].losses))}
    out[shape] = res
    del runners, base
  out["loadavg_1min_end"] = round(os.getloadavg()[0], 2)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
