"""Where training metrics go: `metrics.jsonl`, TensorBoard event files (tensorboardX, no
TensorFlow needed) and a progress bar on an interactive terminal."""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import tqdm

from msm_io.files import atomic_write_text
from msm_jax.errors import naming


class MetricsError(ValueError):
  """A metrics.jsonl that cannot be read back (a damaged line before the last)."""


def finite_or_none(record: dict) -> dict:
  """JSON has no NaN or infinity: a non-finite float is written as null, so every line of
  metrics.jsonl stays valid JSON for any reader (a diverged step shows as `"loss": null`)."""
  return {k: None if isinstance(v, float) and not math.isfinite(v) else v
          for k, v in record.items()}


def read_metrics(path) -> list[dict]:
  """The records of a metrics.jsonl. A last line cut short (a crash mid-write) is dropped with a
  warning; an unreadable line before it is an error naming file:line."""
  path = Path(path)
  if not path.exists():
    return []
  lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
  records = []
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if any(rest.strip() for rest in lines[lineno:]):
        raise MetricsError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
      warnings.warn(f"{path}:{lineno}: dropped an incomplete last line (a run stopped while "
                    "writing it)", stacklevel=2)
  return records


def truncate_jsonl(path: Path, after_step: int) -> None:
  """Drop records logged after `after_step` (a resumed run re-logs them), atomically."""
  if not path.exists():
    return
  kept = [r for r in read_metrics(path) if r.get("step", 0) <= after_step]
  atomic_write_text(path, "".join(json.dumps(finite_or_none(r)) + "\n" for r in kept))


class MetricsWriter:

  def __init__(self, workdir, *, start_step: int, total_steps: int, progress: bool = True,
               is_primary: bool = True):
    self.workdir = Path(workdir)
    self.primary = is_primary
    self.path = self.workdir / "metrics.jsonl"
    self.bar = None
    if not is_primary:
      return
    truncate_jsonl(self.path, start_step)
    self.file = open(self.path, "a")
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(str(self.workdir / "tb"), purge_step=start_step + 1)
    if progress and sys.stderr.isatty() and not os.environ.get("CI"):
      self.bar = tqdm.tqdm(total=total_steps, initial=start_step, dynamic_ncols=True)

  def last_record(self) -> dict:
    """The last training record already logged (what a finished run that is rerun reports)."""
    if not self.path.exists():
      return {}
    return next((r for r in reversed(read_metrics(self.path)) if "loss" in r), {})

  def write(self, record: dict) -> None:
    if not self.primary:
      return
    with naming(self.path):
      self.file.write(json.dumps(finite_or_none(record), allow_nan=False) + "\n")
      self.file.flush()
    step = record["step"]
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float)):
        self.tb.add_scalar(key, value, step)
    if self.bar is not None and "loss" in record:
      self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record.get('tokens_per_sec', 0):.0f}")

  def advance(self, n: int = 1) -> None:
    if self.bar is not None:
      self.bar.update(n)

  def close(self) -> None:
    if not self.primary:
      return
    self.file.close()
    self.tb.close()
    if self.bar is not None:
      self.bar.close()
