"""The `msm` command. Each subcommand lives beside the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys

# (module, function): function(subparsers) adds one subcommand whose parser sets `func(args)`.
SUBCOMMANDS = (
    ("msm_jax.trainer", "add_train_parser"),
    ("data_pipelines.cli", "add_generate_parser"),
    ("msm_jax.data.cli", "add_tokenizer_parser"),
    ("data_pipelines.cli", "add_data_parser"),
    ("msm_jax.eval.cli", "add_eval_parser"),
    ("msm_jax.experiment", "add_run_parser"),
)


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="msm", description="Model Spec Midtraining: spec -> documents -> train -> eval.")
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
    if arg.startswith("--config."):
      key = arg[len("--config."):]
      if "=" in key:
        key, value = key.split("=", 1)
      elif i + 1 < len(argv):
        i += 1
        value = argv[i]
      else:
        raise SystemExit(f"msm: {arg} needs a value")
      overrides[key] = value
    else:
      rest.append(arg)
    i += 1
  return rest, overrides


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  argv, overrides = split_config_overrides(argv)
  parser = build_parser()
  args = parser.parse_args(argv)
  args.config_overrides = overrides
  if not getattr(args, "func", None):
    parser.print_help()
    return 2
  return int(args.func(args) or 0)


if __name__ == "__main__":
  sys.exit(main())
