"""Where training metrics go: `metrics.jsonl`, TensorBoard event files (tensorboardX, no
TensorFlow needed) and a progress bar on an interactive terminal.

On a local disk each record is appended and flushed as it comes. An object store (a `gs://`
workdir) has no append: there the writer keeps the file's records and rewrites the whole object
every `REMOTE_FLUSH_RECORDS` records, every `REMOTE_FLUSH_SECONDS` and on close (one atomic
write each: readers see the previous version or the new one). A crash loses at most that much of
the log, and a resumed run re-logs the steps after its checkpoint anyway.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings

import tqdm

from msm_io import paths
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
  path = paths.path(path)
  if not path.exists():
    return []
  lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
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


def truncate_jsonl(path, after_step: int) -> None:
  """Drop records logged after `after_step` (a resumed run re-logs them), atomically."""
  path = paths.path(path)
  if not path.exists():
    return
  kept = [r for r in read_metrics(path) if r.get("step", 0) <= after_step]
  atomic_write_text(path, _lines(kept))


def _lines(records) -> str:
  return "".join(json.dumps(finite_or_none(r), allow_nan=False) + "\n" for r in records)


REMOTE_FLUSH_RECORDS = 50
REMOTE_FLUSH_SECONDS = 30.0


class MetricsWriter:

  def __init__(self, workdir, *, start_step: int, total_steps: int, progress: bool = True,
               is_primary: bool = True):
    self.workdir = paths.path(workdir)
    self.primary = is_primary
    self.path = self.workdir / "metrics.jsonl"
    self.bar = None
    if not is_primary:
      return
    truncate_jsonl(self.path, start_step)
    self.remote = paths.is_uri(self.path)  # no appends on an object store: rewrite the object
    if self.remote:
      self._records = read_metrics(self.path)
      self._unflushed, self._flushed_at = 0, time.monotonic()
    else:
      self.file = open(self.path, "a")
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(paths.native(self.workdir / "tb"), purge_step=start_step + 1)
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
      if self.remote:
        self._records.append(record)
        self._unflushed += 1
        if (self._unflushed >= REMOTE_FLUSH_RECORDS
            or time.monotonic() - self._flushed_at >= REMOTE_FLUSH_SECONDS):
          self.flush()
      else:
        self.file.write(_lines([record]))
        self.file.flush()
    step = record["step"]
    for key, value in record.items():
      if key != "step" and isinstance(value, (int, float)):
        self.tb.add_scalar(key, value, step)
    if self.bar is not None and "loss" in record:
      self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record.get('tokens_per_sec', 0):.0f}")

  def flush(self) -> None:
    """Write out what is buffered (an object store workdir; a local file is always current)."""
    if self.primary and self.remote and self._unflushed:
      atomic_write_text(self.path, _lines(self._records))
      self._unflushed, self._flushed_at = 0, time.monotonic()

  def advance(self, n: int = 1) -> None:
    if self.bar is not None:
      self.bar.update(n)

  def close(self) -> None:
    if not self.primary:
      return
    if self.remote:
      self.flush()
    else:
      self.file.close()
    self.tb.close()
    if self.bar is not None:
      self.bar.close()
