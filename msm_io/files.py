"""Small file helpers. Every write is atomic (tmp file + rename) so an interrupted run never
leaves a half-written file that a later run would mistake for finished work; jsonl readers name
file:line on bad input; content hashes key caches. Paths go through `msm_io.paths`, so a
`gs://` path works too: there the temporary object is renamed through epath (on GCS a rename is
a copy and a delete, fine for the small files written here; a reader sees the old object or the
new one, never a part)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Iterator

from msm_io import paths


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  if paths.is_uri(path):
    _atomic_write_uri(paths.path(path), data)
    return
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    try:
      with os.fdopen(fd, "wb") as f:
        f.write(data)
      os.replace(tmp, path)
    except OSError as e:  # a full disk says only "[Errno 28]": name the file being written
      if not e.filename:
        e.filename = str(path)
      raise
  except BaseException:
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise


def _atomic_write_uri(path, data: bytes) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
  try:
    tmp.write_bytes(data)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


def link_tree(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """A finished directory `src` at `dst`, its files hard-linked where the file system allows
  (copied where not): built under a temporary name and renamed, so `dst` is whole or absent;
  a partial `dst` is replaced. Safe only for files never changed in place (atomic writes
  replace them), like finished runs."""
  def link(a, b):
    try:
      os.link(a, b)
    except OSError:
      shutil.copy2(a, b)

  src, dst = Path(src), Path(dst)
  tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
  try:
    shutil.copytree(src, tmp, copy_function=link)
    if dst.exists():
      shutil.rmtree(dst)
    os.replace(tmp, dst)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
  """Canonical JSON text: sorted keys, fixed indent, so identical data gives identical bytes."""
  return json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
  try:
    with paths.path(path).open("r", encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    return default


def jsonl_text(rows: Iterable[dict]) -> str:
  return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows)


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
  atomic_write_text(path, jsonl_text(rows))


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError
               ) -> Iterator[tuple[int, dict]]:
  """Yields (line number, object) for each non-blank line; a line that is not a JSON object
  raises `error` naming file:line, so every reader of jsonl reports bad input the same way."""
  with paths.path(path).open("rb") as f:
    for lineno, raw in enumerate(f, 1):
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise error(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column "
                    f"{e.start + 1}); is this a binary file?") from None
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
      if not isinstance(row, dict):
        raise error(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
      yield lineno, row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
  """Reads a jsonl file; a malformed line raises ValueError naming file:line."""
  return [row for _, row in iter_jsonl(path)]


def file_sha256(path: str | os.PathLike) -> str:
  """Hex sha256 of a file's bytes, read in 1 MiB blocks (corpora can be large)."""
  h = hashlib.sha256()
  with paths.path(path).open("rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()
