"""Corpus readers: jsonl documents, jsonl chats, and TFDS array_record dataset directories.

The jsonl formats are the reference generator's, read as they are:
  documents  data/midtrain/<name>/dataset.jsonl  {"text": ..., "source": ..., "domain": ...}
  chats      data/ft/<name>/dataset.jsonl        {"messages": [{"role", "content"}, ...]}
Extra fields are ignored. Every line is checked when the file is opened, so a malformed corpus
fails before training starts, with `file:line` and the field at fault.

A TFDS dataset is named by its directory (the one holding `dataset_info.json`, or its parent
holding version directories), optionally with `:split` appended; the split defaults to `train`.
It is read through `builder.as_data_source(split)` (random access, no TensorFlow needed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from msm_io import paths
from msm_io.files import iter_jsonl

DOCUMENTS, CHATS = "documents", "chats"
KINDS = (DOCUMENTS, CHATS)


class CorpusError(ValueError):
  """A corpus that cannot be read as asked; the message names file:line and the field."""


def resolve_kind(kind: str, stage: str) -> str:
  """'auto' means documents for pretrain/midtrain and chats for finetune."""
  if kind == "auto":
    return CHATS if stage == "finetune" else DOCUMENTS
  if kind not in KINDS:
    raise CorpusError(f"config.data.kind: documents | chats | auto, got {kind!r}")
  return kind


ROLES = ("system", "user", "assistant")


def _check_messages(messages: Any, where: str) -> list[dict]:
  """The shape every chat template renders and finetuning learns from: an optional system
  message first, then user and assistant turns alternating from a user turn, with at least one
  assistant turn (its tokens are the only training targets of a chat)."""
  if not isinstance(messages, list) or not messages:
    raise CorpusError(f"{where}: field 'messages' must be a non-empty list")
  for i, m in enumerate(messages):
    if not isinstance(m, dict):
      raise CorpusError(f"{where}: field 'messages[{i}]' must be an object")
    for key in ("role", "content"):
      if not isinstance(m.get(key), str):
        raise CorpusError(f"{where}: field 'messages[{i}].{key}' must be a string")
    role = m["role"]
    if role not in ROLES:
      raise CorpusError(f"{where}: field 'messages[{i}].role': {role!r} is not one of {ROLES}")
    first = 1 if messages[0]["role"] == "system" else 0
    if i >= first:
      want = ("user", "assistant")[(i - first) % 2]
      if role != want:
        raise CorpusError(
            f"{where}: field 'messages[{i}].role': expected {want!r}, got {role!r} (a chat is an "
            "optional system message, then user and assistant turns alternating from user)")
  if not any(m["role"] == "assistant" for m in messages):
    raise CorpusError(f"{where}: field 'messages': no assistant turn, so nothing to train on")
  return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_documents_jsonl(path, text_field: str = "text") -> list[str]:
  """The text of every line of a documents jsonl file."""
  path = paths.path(path)
  texts = []
  for lineno, obj in iter_jsonl(path, CorpusError):
    if text_field not in obj:
      if "messages" in obj:
        raise CorpusError(
            f"{path}:{lineno}: missing field {text_field!r}; this line has 'messages', so the "
            "file holds chats, but documents were expected (pretrain/midtrain stages, or "
            "config.data.kind=documents). Use --stage finetune or config.data.kind=chats.")
      raise CorpusError(f"{path}:{lineno}: missing field {text_field!r} "
                        f"(config.data.text_field); fields are {sorted(obj)}")
    if not isinstance(obj[text_field], str):
      raise CorpusError(f"{path}:{lineno}: field {text_field!r} must be a string, got "
                        f"{type(obj[text_field]).__name__}")
    texts.append(obj[text_field])
  return texts


def read_chats_jsonl(path, text_field: str = "text") -> list[list[dict]]:
  """The message list of every line of a chats jsonl file."""
  path = paths.path(path)
  chats = []
  for lineno, obj in iter_jsonl(path, CorpusError):
    where = f"{path}:{lineno}"
    if "messages" not in obj:
      if text_field in obj:
        raise CorpusError(
            f"{where}: missing field 'messages'; this line has {text_field!r}, so the file "
            "holds documents, but chats were expected (finetune stage, or "
            "config.data.kind=chats). Use --stage midtrain or config.data.kind=documents.")
      raise CorpusError(f"{where}: missing field 'messages'; fields are {sorted(obj)}")
    chats.append(_check_messages(obj["messages"], where))
  return chats


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def split_tfds_spec(spec: str) -> tuple[Path, str]:
  """'DIR' or 'DIR:split' -> (version directory, split)."""
  path, split = str(spec), "train"
  head, sep, tail = path.rpartition(":")
  if sep and head and "/" not in tail and paths.path(head).is_dir():
    path, split = head, tail
  directory = paths.path(path)
  if not (directory / "dataset_info.json").is_file():
    version = lambda p: [int(x) if x.isdigit() else -1 for x in p.parent.name.split(".")]
    versions = sorted(directory.glob("*/dataset_info.json"), key=version)
    if not versions:
      raise CorpusError(f"{spec}: not a TFDS dataset directory (no dataset_info.json)")
    directory = versions[-1].parent
  return directory, split


class TfdsSource(Sequence):
  """Random access to a TFDS array_record split, yielding texts or message lists."""

  def __init__(self, spec: str, kind: str, text_field: str = "text"):
    import tensorflow_datasets as tfds  # heavy; only when a TFDS corpus is used
    directory, split = split_tfds_spec(spec)
    self.spec, self.kind, self.text_field = str(spec), kind, text_field
    builder = tfds.builder_from_directory(str(directory))
    if split not in builder.info.splits:
      raise CorpusError(f"{spec}: no split {split!r}; splits are {sorted(builder.info.splits)} "
                        "(name one as DIR:split)")
    features = set(builder.info.features.keys())
    want = "messages" if kind == CHATS else text_field
    if want not in features:
      other = ("documents" if text_field in features else "chats") if kind == CHATS else (
          "chats" if "messages" in features else "")
      hint = f"; it holds {other}, but {kind} were expected" if other else ""
      raise CorpusError(f"{spec}: missing feature {want!r} (features: {sorted(features)}){hint}")
    self._source = builder.as_data_source(split)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self[i] for i in range(*index.indices(len(self)))]
    if not -len(self) <= index < len(self):
      raise IndexError(f"{self.spec}: index {index} out of range")
    index %= len(self)
    record = self._source[index]
    where = f"{self.spec}[{index}]"
    if self.kind == DOCUMENTS:
      return _text(record[self.text_field])
    messages = record["messages"]
    if isinstance(messages, (bytes, str)):  # stored as a JSON string
      messages = json.loads(_text(messages))
    elif isinstance(messages, dict):  # tfds Sequence({role, content}) -> dict of lists
      messages = [{"role": _text(r), "content": _text(c)}
                  for r, c in zip(messages["role"], messages["content"])]
    else:
      messages = [{k: _text(v) for k, v in m.items()} for m in messages]
    return _check_messages(messages, where)


def is_tfds(spec: str) -> bool:
  head, sep, _ = str(spec).rpartition(":")
  return paths.path(spec).is_dir() or bool(sep and head and paths.path(head).is_dir())


def open_source(spec: str, kind: str, text_field: str = "text") -> Sequence:
  """A random-access sequence of texts (documents) or message lists (chats)."""
  if kind not in KINDS:
    raise CorpusError(f"unknown corpus kind {kind!r}")
  if is_tfds(spec):
    return TfdsSource(spec, kind, text_field)
  path = paths.path(spec)
  if not path.is_file():
    raise CorpusError(f"corpus file not found: {spec}")
  if kind == DOCUMENTS:
    return read_documents_jsonl(path, text_field)
  return read_chats_jsonl(path, text_field)


def detect_kind(spec: str, text_field: str = "text") -> str:
  """Guess a corpus's kind from its first record (for tools that take any corpus)."""
  if is_tfds(spec):
    import tensorflow_datasets as tfds
    directory, _ = split_tfds_spec(spec)
    features = tfds.builder_from_directory(str(directory)).info.features.keys()
    return CHATS if "messages" in features else DOCUMENTS
  for _, obj in iter_jsonl(spec, CorpusError):
    return CHATS if "messages" in obj and text_field not in obj else DOCUMENTS
  return DOCUMENTS


def iter_texts(spec: str, kind: str, text_field: str = "text") -> Iterator[str]:
  """Plain text of a corpus, for tokenizer training: documents, or every message's content."""
  for record in open_source(spec, kind, text_field):
    if kind == DOCUMENTS:
      yield record
    else:
      for m in record:
        yield m["content"]
