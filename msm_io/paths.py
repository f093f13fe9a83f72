"""The one path layer: every workdir, corpus, tokenizer, checkpoint and metrics path is an
`etils.epath.Path`, so `gs://bucket/...` works wherever a local path does (epath reaches GCS
through gcsfs or tf.io.gfile, whichever is installed; orbax uses the same paths).

`mount(prefix, local_dir)` makes a local directory stand in for a bucket: epath's backend for
that scheme is replaced by one that maps `prefix/...` to `local_dir/...`, so code that opens the
URI through epath reads and writes the directory, while code that bypasses the path layer
(`open("gs://...")`, `pathlib.Path`) fails as it would against real GCS. Orbax's array writes go
through tensorstore, which talks to GCS itself, so orbax is handed `native(path)`: the URI
unchanged, or its mounted directory under a mount. Tests use it; so can a user with a bucket
mounted by gcsfuse (`MSM_PATH_MOUNTS=gs://bucket=/mnt/bucket`).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

from etils import epath
from etils.epath import backend as backend_lib
from etils.epath import gpath

_MOUNTS: dict[str, str] = {}  # "gs://bucket" -> "/local/dir"


def is_uri(p) -> bool:
  return "://" in str(p)


def path(p) -> epath.Path:
  """str / pathlib / epath -> an epath.Path; local paths made absolute, URIs left as they are."""
  if isinstance(p, epath.Path) and is_uri(p):
    return p
  text = os.fspath(p) if not isinstance(p, str) else p
  return epath.Path(text if is_uri(text) else os.path.abspath(text))


def _to_local(p: str) -> str | None:
  for prefix, local in _MOUNTS.items():
    if p == prefix or p.startswith(prefix + "/"):
      return local + p[len(prefix):]
  return None


def native(p) -> str:
  """What to hand a library that resolves paths itself (orbax/tensorstore, tensorboardX): the
  URI, or the directory a mount maps it to."""
  text = str(path(p))
  return _to_local(text) or text


def is_local(p) -> bool:
  """Whether `p` lives on a local disk (where appends and renames are cheap and atomic)."""
  return not is_uri(native(p))


class _MountedBackend(backend_lib.Backend):
  """epath's backend for a mounted scheme: each call on `gs://bucket/x` runs on its local path
  (URIs of an unmounted bucket go to the scheme's usual backend)."""

  def __init__(self, fallback):
    self._fallback = fallback
    self._os = backend_lib.os_backend

  def _call(self, name, p, *args, **kwargs):
    local = _to_local(str(p))
    if local is None:
      return getattr(self._fallback, name)(p, *args, **kwargs)
    result = getattr(self._os, name)(local, *args, **kwargs)
    if name == "glob":  # matches back in the URI's namespace
      return [self._to_uri(str(p), local, r) for r in result]
    return result

  @staticmethod
  def _to_uri(uri: str, local: str, found: str) -> str:
    root_local, root_uri = local, uri
    while root_local and not found.startswith(root_local):
      root_local, root_uri = os.path.dirname(root_local), root_uri.rsplit("/", 1)[0]
    return root_uri + found[len(root_local):]

  def open(self, path, mode, **kwargs):
    return self._call("open", path, mode, **kwargs)

  def exists(self, path):
    return self._call("exists", path)

  def isdir(self, path):
    return self._call("isdir", path)

  def listdir(self, path):
    return self._call("listdir", path)

  def glob(self, path):
    return self._call("glob", path)

  def walk(self, top, *, top_down=True, on_error=None):
    local = _to_local(str(top))
    if local is None:
      yield from self._fallback.walk(top, top_down=top_down, on_error=on_error)
      return
    for root, dirs, files in self._os.walk(local, top_down=top_down, on_error=on_error):
      yield self._to_uri(str(top), local, root), dirs, files

  def makedirs(self, path, *, exist_ok=False, mode=0o777):
    return self._call("makedirs", path, exist_ok=exist_ok, mode=mode)

  def mkdir(self, path, *, exist_ok=False, mode=0o777):
    return self._call("mkdir", path, exist_ok=exist_ok, mode=mode)

  def rmtree(self, path):
    return self._call("rmtree", path)

  def remove(self, path):
    return self._call("remove", path)

  def rename(self, path, dst):
    return self._os.rename(_to_local(str(path)) or path, _to_local(str(dst)) or dst)

  def replace(self, path, dst):
    return self._os.replace(_to_local(str(path)) or path, _to_local(str(dst)) or dst)

  def copy(self, path, dst, *, overwrite):
    return self._os.copy(_to_local(str(path)) or path, _to_local(str(dst)) or dst,
                         overwrite=overwrite)

  def stat(self, path):
    return self._call("stat", path)


@contextlib.contextmanager
def mount(prefix: str, local_dir) -> Iterator[None]:
  """Within the block, `prefix` (e.g. "gs://bucket") is the local directory `local_dir`."""
  prefix = prefix.rstrip("/")
  scheme = prefix.split("://", 1)[0]
  table = gpath._PREFIX_TO_BACKEND  # pylint: disable=protected-access
  previous = table.get(scheme)
  _MOUNTS[prefix] = os.path.abspath(os.fspath(local_dir))
  table[scheme] = _MountedBackend(previous or backend_lib.os_backend)
  try:
    yield
  finally:
    del _MOUNTS[prefix]
    if previous is None:
      table.pop(scheme, None)
    else:
      table[scheme] = previous
