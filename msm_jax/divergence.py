"""What a run does when a step is not finite: stop at once, or skip up to N updates then stop.

The jitted step reports `finite` (loss, gradients and the updated parameters all finite); with
`config.nonfinite = "skip"` it has already dropped such an update. The host reads that flag one
step late (metrics are fetched after the next step is dispatched), and always before a save, so a
non-finite state is never checkpointed and never rotates a good checkpoint out.
"""

from __future__ import annotations

from msm_io.errors import UserError


class DivergedError(UserError):
  """The run stopped on a non-finite step; the last finite checkpoint is kept."""


class NonFiniteGuard:
  """Counts non-finite steps against `config.nonfinite` / `config.max_skipped_steps`."""

  def __init__(self, cfg):
    self.mode = cfg.get("nonfinite", "stop")
    self.limit = int(cfg.get("max_skipped_steps", 0)) if self.mode == "skip" else 0
    self.skipped = 0

  def count(self, finite: bool) -> None:
    self.skipped += not finite

  def check(self, step: int, finite: bool, record: dict, kept: str) -> None:
    """Raise DivergedError when step `step` (already counted) was not finite and the run may
    not go on. `kept` says which checkpoint is left (for the message)."""
    if finite or (self.mode == "skip" and self.skipped <= self.limit):
      return
    what = ", ".join(f"{k} {record[k]:.4g}" for k in ("loss", "grad_norm")
                     if isinstance(record.get(k), float))
    if self.mode == "skip":
      why = (f"{self.skipped} non-finite steps, more than config.max_skipped_steps="
             f"{self.limit}")
    else:
      why = "config.nonfinite=stop"
    raise DivergedError(
        f"step {step}: the loss, gradients or parameters are not finite ({what}); the run "
        f"diverged and stopped ({why}). {kept}. Lower config.learning_rate, or set "
        "config.nonfinite=skip to skip such steps")
