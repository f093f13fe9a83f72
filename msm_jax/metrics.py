"""Where training metrics go: `metrics.jsonl`, TensorBoard event files (tensorboardX, no
TensorFlow needed) and a progress bar on an interactive terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import tqdm

from msm_io.files import atomic_write_text, read_jsonl


def truncate_jsonl(path: Path, after_step: int) -> None:
  """Drop records logged after `after_step` (a resumed run re-logs them), atomically."""
  if not path.exists():
    return
  kept = [line for line in path.read_text().splitlines()
          if line.strip() and json.loads(line).get("step", 0) <= after_step]
  atomic_write_text(path, "".join(line + "\n" for line in kept))


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
    return next((r for r in reversed(read_jsonl(self.path)) if "loss" in r), {})

  def write(self, record: dict) -> None:
    if not self.primary:
      return
    self.file.write(json.dumps(record) + "\n")
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
