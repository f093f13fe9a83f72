"""Which failures are the user's to fix, and the one line `msm` shows for each.

A user error (bad config, spec, corpus, world, checkpoint, tokenizer, suite; a refused
endpoint; a full disk or a path that cannot be read or written) prints

    msm: error: <file:line or field>: <message>

to stderr and exits 2. Anything else is a bug and keeps its traceback. `msm --traceback ...` or
MSM_TRACEBACK=1 shows the traceback of user errors too. The error classes are named here as
strings and looked up among the loaded modules, so reporting an error imports nothing (an
error cannot come from a module that was never loaded).

Each subcommand raises; only `msm_jax.cli.main` turns a user error into its line and exit code.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
import time

from msm_io.errors import UserError  # noqa: F401 (re-exported: msm_jax.errors.UserError)

EXIT_USER_ERROR = 2

USER_ERRORS = (
    "msm_jax.config:ConfigError",
    "msm_jax.checkpoint:CheckpointError",
    "msm_jax.data.chat:ChatFormatError",
    "msm_jax.data.sources:CorpusError",
    "msm_jax.data.tokenizer:TokenizerError",
    "msm_jax.metrics:MetricsError",
    "msm_jax.eval.suites:SuiteError",
    "msm_jax.eval.loading:NonFiniteError",
    "msm_jax.errors:UserError",
    "msm_jax.interop.peft:PeftError",
    "msm_jax.divergence:DivergedError",
    "msm_jax.run_guard:WorkdirLockedError",
    "data_pipelines.spec:SpecError",
    "data_pipelines.docgen:GenerationError",
    "data_pipelines.llm_client:LLMError",
    "data_pipelines.worlds.world:WorldError",
)

# OSErrors that are about the user's files or disk, not the program: what each means for the run.
_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "is a directory",
    errno.ENOTDIR: "not a directory",
}
_KEPT = ("files written before it are complete (every write goes to a temporary file, then is "
         "renamed into place) and checkpoints already saved are kept; fix this and rerun the "
         "same command to resume")


def user_error_types() -> tuple[type, ...]:
  """The classes of USER_ERRORS whose modules are loaded (an error cannot come from one that
  is not, so nothing heavy is imported on the way out)."""
  types = []
  for spec in USER_ERRORS:
    module_name, name = spec.split(":")
    cls = getattr(sys.modules.get(module_name), name, None)
    if isinstance(cls, type):
      types.append(cls)
  return tuple(types)


def _chain(exc: BaseException):
  """`exc` and what it was raised from (`raise ... from`). Not the implicit `__context__`: a
  bug inside an `except FileNotFoundError:` block must keep its traceback."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    seen.add(id(exc))
    yield exc
    exc = exc.__cause__


def describe(exc: BaseException) -> str | None:
  """The one-line message for a user error (looking through wrapping exceptions), else None."""
  types = user_error_types()
  for e in _chain(exc):
    if isinstance(e, types):
      return " ".join(str(e).split("\n")[0].split()) or type(e).__name__
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError,
                      NotADirectoryError)) and e.errno is None:
      return str(e)  # raised by our own code with a message that names the path
    if isinstance(e, OSError) and e.errno in _OS_ERRORS:
      path = e.filename or "(path not reported)"
      if e.filename2:
        path = f"{path} -> {e.filename2}"
      what = _OS_ERRORS[e.errno]
      if e.errno in (errno.ENOENT, errno.EISDIR, errno.ENOTDIR):
        return f"{path}: {what}"
      return f"{path}: {what}; {_KEPT}"
  return None


@contextlib.contextmanager
def naming(path):
  """An OSError raised inside (a write hitting a full disk says only `[Errno 28]`) carries
  `path` as its filename, so the error line can name it."""
  try:
    yield
  except OSError as e:
    if not e.filename:
      e.filename = str(path)
    raise


def finish_threads(timeout_s: float = 60.0) -> None:
  """Let background (non-daemon) threads finish before a user error exits. Orbax starts one
  as soon as a checkpoint manager exists (it sweeps temporary directories; a save runs in
  another): if the interpreter begins shutting down first, each dies spewing "cannot schedule
  new futures after interpreter shutdown" under the one-line error, and a save is lost."""
  deadline = time.monotonic() + timeout_s
  for t in threading.enumerate():
    if t is not threading.current_thread() and not t.daemon and t.is_alive():
      t.join(max(0.0, deadline - time.monotonic()))


def show_traceback(flag: bool) -> bool:
  return flag or os.environ.get("MSM_TRACEBACK", "") not in ("", "0")
