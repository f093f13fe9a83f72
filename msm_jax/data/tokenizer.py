"""SentencePiece tokenizer: train one on a corpus, or load an existing `.model`; and the registry
of tokenizer kinds a checkpoint can carry (`TOKENIZER_KINDS`, `load_tokenizer_bytes`).

Trained models are BPE with byte fallback (no text is ever `<unk>`), identity normalisation and
no dummy prefix, so `decode(encode(text)) == text` for any text. The chat templates' special
tokens are user-defined symbols: each is one fixed piece right after the four control ids
(pad 0, unk 1, bos 2, eos 3). Training is deterministic: same texts, same arguments, same
bytes, whatever the machine (the RNG seed and thread count are pinned).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import sentencepiece as spm

from msm_io import paths
from msm_io.files import atomic_write_bytes
from msm_jax.data.chat import ALL_SPECIAL_TOKENS

_BYTE_PIECES = 256
_TRAIN_THREADS = 4  # pinned: part of the trained model's bytes


class TokenizerError(ValueError):
  """A tokenizer file that cannot be used, or a corpus a tokenizer cannot be trained on."""


class Tokenizer:
  """A SentencePiece model plus the ids the rest of the project relies on."""

  kind = "sentencepiece"  # a key of TOKENIZER_KINDS: how a checkpoint's bytes are read back
  pad_id = 0
  unk_id = 1
  bos_id = 2
  eos_id = 3

  def __init__(self, model_proto: bytes, path: str = ""):
    self._proto = bytes(model_proto)
    try:
      self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    except RuntimeError:  # sentencepiece says only that the protobuf did not parse
      raise TokenizerError(f"{path or '<bytes>'}: not a SentencePiece model (the file does not "
                           "parse; train one with `msm tokenizer train`)") from None
    self.path = str(path)
    self.sha256 = hashlib.sha256(self._proto).hexdigest()
    self.vocab_size = int(self._sp.get_piece_size())
    # A model trained elsewhere may number its control tokens differently: use its own ids.
    self.unk_id = int(self._sp.unk_id())
    self.bos_id = int(self._sp.bos_id())
    self.eos_id = int(self._sp.eos_id())
    pad = int(self._sp.pad_id())
    self.pad_id = pad if pad >= 0 else 0  # packed rows mark padding with segment 0 anyway
    if self.bos_id < 0 or self.eos_id < 0:
      raise TokenizerError(f"tokenizer {path or '<bytes>'}: needs bos and eos pieces")

  @classmethod
  def load(cls, path) -> "Tokenizer":
    path = paths.path(path)
    if not path.is_file():
      raise FileNotFoundError(f"tokenizer model not found: {path}")
    return cls(path.read_bytes(), str(path))

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text, out_type=int)

  def decode(self, ids) -> str:
    return self._sp.decode([int(i) for i in ids])

  def token_id(self, piece: str) -> int:
    """The id of one piece; KeyError when the vocabulary lacks it."""
    i = int(self._sp.piece_to_id(piece))
    if i == self.unk_id and piece != self._sp.id_to_piece(self.unk_id):
      raise KeyError(f"tokenizer {self.path or '<bytes>'} has no piece {piece!r}")
    return i

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def has_piece(self, piece: str) -> bool:
    try:
      self.token_id(piece)
      return True
    except KeyError:
      return False

  @property
  def model_proto(self) -> bytes:
    return self._proto

  def to_bytes(self) -> bytes:
    """What a checkpoint stores; `load_tokenizer_bytes(self.kind, ...)` reads it back."""
    return self._proto

  def __getstate__(self):  # picklable, for grain worker processes
    return {"proto": self._proto, "path": self.path}

  def __setstate__(self, state):
    self.__init__(state["proto"], state["path"])

  def __repr__(self) -> str:
    return f"Tokenizer({self.path or '<bytes>'}, vocab_size={self.vocab_size})"


@dataclasses.dataclass(frozen=True)
class TokenizerKind:
  """How to rebuild one kind of tokenizer from its bytes, and the file a run directory keeps."""
  load: Callable[[bytes, str], Any]  # (bytes, path for messages) -> tokenizer
  file_name: str


# Registering a kind is one line here (a loader may import its module lazily).
TOKENIZER_KINDS: dict[str, TokenizerKind] = {
    "sentencepiece": TokenizerKind(lambda blob, path: Tokenizer(blob, path), "tokenizer.model"),
    "hf": TokenizerKind(lambda blob, path: _hf().from_bytes(blob, path), "tokenizer.hf.json"),
}


def _hf():
  """The Hugging Face tokenizer class, imported only when a run carries one."""
  from msm_jax.data.hf_tokenizer import HFTokenizer  # noqa: PLC0415
  return HFTokenizer


def tokenizer_kind(kind: str) -> TokenizerKind:
  if kind not in TOKENIZER_KINDS:
    raise ValueError(f"unknown tokenizer kind {kind!r}; known: {', '.join(TOKENIZER_KINDS)}")
  return TOKENIZER_KINDS[kind]


def load_tokenizer_bytes(kind: str, blob: bytes, path: str = ""):
  """A tokenizer of a registered kind from the bytes its `to_bytes()` gave."""
  return tokenizer_kind(kind).load(bytes(blob), str(path))


def load_tokenizer_file(path):
  """A tokenizer file; its kind is the one whose file name has the same suffix (else
  sentencepiece, whose models come under any name)."""
  path = paths.path(path)
  if not path.is_file():
    raise FileNotFoundError(f"tokenizer model not found: {path}")
  kind = next((k for k, v in TOKENIZER_KINDS.items()
               if k != "sentencepiece" and path.suffix == Path(v.file_name).suffix),
              "sentencepiece")
  return load_tokenizer_bytes(kind, path.read_bytes(), str(path))


def save_tokenizer_file(tokenizer, directory) -> Path:
  """Write `tokenizer` into a run directory under its kind's file name (atomically; kept when
  the same bytes are already there), so every run directory carries the tokenizer it reads."""
  dest = paths.path(directory) / tokenizer_kind(tokenizer.kind).file_name
  blob = tokenizer.to_bytes()
  if not dest.is_file() or dest.read_bytes() != blob:
    atomic_write_bytes(dest, blob)
  return dest


def min_vocab_size(special_tokens: Sequence[str] = ALL_SPECIAL_TOKENS) -> int:
  """Smallest trainable vocabulary: 4 control ids, the specials, 256 byte pieces, a few merges."""
  return 4 + len(special_tokens) + _BYTE_PIECES + 8


def train_tokenizer(texts: Iterable[str], out_path, vocab_size: int, *,
                    special_tokens: Sequence[str] = ALL_SPECIAL_TOKENS, seed: int = 0,
                    max_texts: int = 2_000_000) -> Tokenizer:
  """Train a BPE SentencePiece model on `texts` and write it atomically to `out_path`.

  The vocabulary may come out smaller than `vocab_size` when the corpus has fewer distinct
  merges; it is never larger. Beyond `max_texts` texts a seeded sample is used.
  """
  need = min_vocab_size(special_tokens)
  if vocab_size < need:
    raise TokenizerError(f"vocab_size {vocab_size} is too small: byte fallback and "
                     f"{len(special_tokens)} special tokens need at least {need}")
  out_path = paths.path(out_path)
  counted = _NonEmpty(texts)
  writer = io.BytesIO()
  spm.set_random_generator_seed(int(seed))
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(counted), model_writer=writer, vocab_size=int(vocab_size),
        model_type="bpe", pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        user_defined_symbols=list(special_tokens), byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, split_digits=True, character_coverage=1.0,
        hard_vocab_limit=False, max_sentence_length=1 << 24, num_threads=_TRAIN_THREADS,
        input_sentence_size=int(max_texts), shuffle_input_sentence=True, minloglevel=2)
  except RuntimeError as e:
    if not counted.n:
      raise TokenizerError(f"cannot train a tokenizer for {out_path}: no non-empty texts") from e
    raise
  proto = writer.getvalue()
  atomic_write_bytes(out_path, proto)
  return Tokenizer(proto, str(out_path))


class _NonEmpty:
  """Iterates the non-empty texts and counts them (SentencePiece rejects empty input)."""

  def __init__(self, texts: Iterable[str]):
    self._texts = texts
    self.n = 0

  def __iter__(self):
    for t in self._texts:
      if t:
        self.n += 1
        yield t
