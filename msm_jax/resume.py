"""Resuming a workdir: the newest checkpoint that restores, and refusing a run it cannot continue.

A damaged newest step (a truncated or missing file, a save cut short) is skipped with one line
saying which step and why, and the previous step is used; once one restores, the damaged steps
are moved aside to `<workdir>/checkpoints.damaged/` (kept, not deleted) so the run can save those
steps again. If none restores, nothing is moved and the error names the newest failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

from msm_jax.checkpoint import CheckpointError, Checkpointer, Run
from msm_jax.config import ConfigError
from msm_jax.model_config import first_difference


def check_continues(cfg, run: Run) -> None:
  """A resumed run must be the same stage with the same model layout."""
  stage = run.meta.get("stage")
  if stage is not None and stage != cfg.stage:
    raise ConfigError(f"--stage {cfg.stage}: this workdir holds a {stage} run ({run.path}); "
                      f"resume it with --stage {stage}, or use another workdir")
  diff = first_difference(cfg.model, run.config.model)
  if diff:
    key, mine, theirs = diff
    raise ConfigError(f"config.model.{key}: {mine!r} differs from {theirs!r} in the run being "
                      f"resumed ({run.path}); use another workdir for another model")


def _reason(e: BaseException) -> str:
  lines = [line.strip() for line in str(e).splitlines() if line.strip()]
  text = lines[0] if lines else ""
  return f"{type(e).__name__}: {text[:200]}"


def restore_newest(ckpt: Checkpointer, cfg, prepare, abstract_state):
  """(run, prepared, state) of the newest step of `ckpt` that restores. `prepare(run)` builds
  what the restore needs (tokenizer, data iterator) and returns (anything, data_iter); its
  errors, and a run this config cannot continue, are raised, not skipped."""
  skipped, first_error = [], None

  def skip(step, e):
    nonlocal first_error
    first_error = first_error or e
    skipped.append(step)
    print(f"msm: warning: {ckpt.directory / str(step)}: skipped, it does not restore "
          f"({_reason(e)})", file=sys.stderr)

  for step in sorted(ckpt.manager.all_steps(), reverse=True):
    try:
      run = ckpt.open_run(step)
    except Exception as e:  # noqa: BLE001 - a step whose config/meta do not read is damaged
      skip(step, e)
      continue
    check_continues(cfg, run)
    prepared, data_iter = prepare(run)
    try:
      state = run.restore_state(abstract_state, data_iter)
    except Exception as e:  # noqa: BLE001 - so is one whose state or data position does not
      skip(step, e)
      continue
    if skipped:
      _move_aside(ckpt, skipped)
      print(f"msm: warning: resuming from step {step}, the newest checkpoint that restores",
            file=sys.stderr)
    return run, prepared, state
  raise CheckpointError(f"{ckpt.directory}: no checkpoint restores (newest: "
                        f"{_reason(first_error)})")


def _move_aside(ckpt: Checkpointer, steps) -> None:
  aside = ckpt.directory.parent / (ckpt.directory.name + ".damaged")
  aside.mkdir(exist_ok=True)
  for step in steps:
    src = ckpt.directory / str(step)
    dst = aside / str(step)
    n = 1
    while dst.exists():
      dst, n = aside / f"{step}.{n}", n + 1
    if src.exists():
      src.rename(dst)
      print(f"msm: warning: moved the damaged step {step} to {dst}", file=sys.stderr)
  ckpt.manager.reload()
