"""One training process per workdir: a lock file holding the owner's pid and host.

The lock is an `fcntl.flock` on `<workdir>/msm.lock`, which the kernel releases when its process
dies however it dies, so a lock left by a killed run is never mistaken for a live one: the file
then still names the dead owner, and the next run takes it over with a warning. A second run on a
live workdir fails at once naming the holder. (Local file systems; paths such as gs:// that
cannot be locked are not locked.)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from msm_io.errors import UserError

LOCK_NAME = "msm.lock"


class WorkdirLockedError(UserError):
  """Another live process trains in this workdir."""


def _holder(fd) -> dict:
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    return json.loads(text) if text else {}
  except (OSError, ValueError):
    return {"pid": "?", "host": "?"}


class WorkdirLock:
  """Held for the life of a `train` call (a context manager); `enabled=False` does nothing."""

  def __init__(self, workdir, enabled: bool = True):
    self.path = Path(workdir) / LOCK_NAME
    self.enabled = enabled and "://" not in str(workdir)
    self.fd = None

  def __enter__(self):
    if not self.enabled:
      return self
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      h = _holder(fd)
      os.close(fd)
      raise WorkdirLockedError(
          f"{self.path.parent}: in use by another msm process (pid {h.get('pid')} on host "
          f"{h.get('host')}, lock {self.path}); wait for it to finish or use another "
          "workdir") from None
    stale = _holder(fd)
    if stale:  # a released lock is emptied: this one's owner died without releasing it
      print(f"msm: warning: {self.path}: taking over the stale lock of pid {stale.get('pid')} "
            f"on host {stale.get('host')} (that process is gone)", file=sys.stderr)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
    self.fd = fd
    return self

  def __exit__(self, *exc):
    if self.fd is not None:
      try:
        os.ftruncate(self.fd, 0)
      finally:
        os.close(self.fd)  # releases the flock
        self.fd = None


@contextlib.contextmanager
def deferred_interrupt():
  """Ctrl-C inside (a checkpoint save being started) is held until the block ends, then raised:
  the save is never cut in half, and the way out waits for its async part to finish."""
  caught = []

  def hold(signum, frame):
    caught.append(signum)

  try:
    previous = signal.signal(signal.SIGINT, hold)
  except ValueError:  # not the main thread: signals are not ours to handle
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGINT, previous)
  if caught:
    raise KeyboardInterrupt
