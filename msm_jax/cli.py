"""The `msm` command. Each subcommand lives beside the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import ctypes
import glob
import importlib
import os
import sys

from msm_jax import errors

# (module, function): function(subparsers) adds one subcommand whose parser sets `func(args)`.
SUBCOMMANDS = (
    ("msm_jax.trainer", "add_train_parser"),
    ("data_pipelines.cli", "add_generate_parser"),
    ("msm_jax.data.cli", "add_tokenizer_parser"),
    ("data_pipelines.cli", "add_data_parser"),
    ("data_pipelines.cli", "add_world_parser"),
    ("msm_jax.eval.cli", "add_eval_parser"),
    ("msm_jax.experiment", "add_run_parser"),
    ("msm_jax.plan", "add_plan_parser"),
    ("msm_jax.interop.hf_import", "add_import_parser"),
    ("msm_jax.interop.hf_export", "add_export_parser"),
    ("msm_jax.serve.cli", "add_serve_parser"),
    ("msm_jax.launch_local", "add_launch_local_parser"),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="msm", description="Model Spec Midtraining: spec -> documents -> train -> eval.")
  parser.add_argument("--traceback", action="store_true",
                      help="show the full stack for user errors too (or set MSM_TRACEBACK=1)")
  subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
  for module_name, fn_name in SUBCOMMANDS:
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      if e.name and module_name.startswith(e.name):
        continue  # that part of the project is not installed
      raise
    getattr(module, fn_name)(subparsers)
  return parser


def split_config_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
  """Pull `--config.a.b=value` (or `--config.a.b value`) out of argv."""
  rest, overrides = [], {}
  i = 0
  while i < len(argv):
    arg = argv[i]
    if arg == "--":  # what follows is another command's (msm launch-local -- msm train ...)
      rest.extend(argv[i:])
      break
    if arg.startswith("--config."):
      key = arg[len("--config."):]
      if "=" in key:
        key, value = key.split("=", 1)
      elif i + 1 < len(argv):
        i += 1
        value = argv[i]
      else:
        raise errors.UserError(f"{arg}: needs a value")
      overrides[key] = value
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def retain_malloc(force: bool = False) -> bool:
  """On a CPU-only Linux host, make glibc keep freed memory: one arena, no mmap, no trim.

  XLA:CPU mallocs each train step's temporaries afresh; with glibc's defaults every step
  page-faults them in again (S2: 340k faults, 0.5 s of kernel time a step, 1.12x slower; see
  benchmarks/README.md). Resident memory then stays at the step's peak. Must run before JAX
  starts its threads; `MSM_MALLOC=system` opts out. Hosts with accelerators are left alone unless
  `force`. Returns whether the setting took.
  """
  if not force:
    if os.environ.get("MSM_MALLOC", "retain") != "retain":
      return False
    if (os.environ.get("JAX_PLATFORMS", "cpu") != "cpu" or glob.glob("/dev/accel*")
        or glob.glob("/dev/nvidia*")):
      return False
  if not sys.platform.startswith("linux") or "jax" in sys.modules:
    return False  # too late once JAX is loaded: its threads and buffers already use the heap
  try:
    libc = ctypes.CDLL("libc.so.6")
  except OSError:
    return False
  return all(libc.mallopt(option, value) == 1  # M_ARENA_MAX, M_MMAP_MAX, M_TRIM_THRESHOLD
             for option, value in ((-8, 1), (-4, 0), (-1, 2**31 - 1)))


def deterministic_gpu(env=os.environ) -> str:
  """Ask XLA:GPU for deterministic kernels (`--xla_gpu_deterministic_ops=true` in XLA_FLAGS)
  unless XLA_FLAGS already says: the embeddings' gradient is a scatter-add, which on a GPU
  otherwise sums in a run-dependent order, and the same config and seed must give the same
  losses and tables. XLA:CPU accepts the flag and ignores it. Returns XLA_FLAGS."""
  flags = env.get("XLA_FLAGS", "")
  if "xla_gpu_deterministic_ops" not in flags:
    env["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
  return env["XLA_FLAGS"]


def compilation_cache(env=os.environ) -> str | None:
  """Keep compiled XLA programs on disk (JAX's persistent compilation cache), so the stages of an
  experiment that share a program (three midtrainings, four AFTs, every eval), its reruns and
  the worlds of a sweep compile it once. Where: MSM_XLA_CACHE (a directory, or `off`), else
  JAX_COMPILATION_CACHE_DIR if set, else ~/.cache/msm-jax/xla (at most 4 GB, least recently used
  programs dropped first). Must run before JAX is imported: JAX reads these variables then."""
  choice = env.get("MSM_XLA_CACHE", "")
  if choice == "off":
    return None
  if choice:
    env["JAX_COMPILATION_CACHE_DIR"] = choice
  elif not env.get("JAX_COMPILATION_CACHE_DIR"):
    home = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(home, "msm-jax", "xla")
  env.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 << 30))
  return env["JAX_COMPILATION_CACHE_DIR"]


def entry() -> int:
  """The `msm` console script: process-wide settings first, then the command."""
  retain_malloc()
  deterministic_gpu()  # read when JAX starts its backend, later than this
  if "jax" not in sys.modules:  # JAX reads its cache settings when it is imported
    compilation_cache()
  return main()


EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


def main(argv: list[str] | None = None) -> int:
  """Run one subcommand. A user error (see msm_jax/errors.py) prints one `msm: error:` line and
  returns 2; other exceptions propagate with their traceback."""
  argv = list(sys.argv[1:] if argv is None else argv)
  try:
    argv, overrides = split_config_overrides(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config_overrides = overrides
    if not getattr(args, "func", None):
      parser.print_help()
      return 2
    return int(args.func(args) or 0)
  except KeyboardInterrupt:  # Ctrl-C: saves in flight have been waited for on the way here
    if errors.show_traceback("--traceback" in argv):
      raise
    errors.finish_threads()
    print("msm: interrupted; checkpoints already saved are kept (rerun to resume)",
          file=sys.stderr)
    return EXIT_INTERRUPTED
  except Exception as e:
    message = errors.describe(e)
    if message is None or errors.show_traceback("--traceback" in argv):
      raise
    errors.finish_threads()
    print(f"msm: error: {message}", file=sys.stderr)
    return errors.EXIT_USER_ERROR


if __name__ == "__main__":
  sys.exit(entry())
