"""A Hugging Face `tokenizer.json` (through the `tokenizers` library) with the project's interface.

Same duck type as `msm_jax.data.tokenizer.Tokenizer` (encode, decode, token_id, id_to_piece,
has_piece, vocab_size, bos/eos/pad/unk ids, sha256, path, to_bytes, picklable), so packing, chat
templates, training and the eval harness use an imported model's own tokenizer unchanged.

The special-token roles come from `tokenizer_config.json` (`bos_token`, `eos_token`, ...), which
`tokenizer.json` alone does not record. Both files travel as one blob (`to_bytes`): a small JSON
bundle that a checkpoint stores and `from_bytes` reads back. A role the model lacks is -1 (Qwen
has no BOS); a missing pad falls back to BOS, then EOS, ids that padding never exposes (packed
rows mark padding with segment 0) and that sampling already never draws.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import tokenizers

KIND = "hf"
_FORMAT = "msm-hf-tokenizer/1"


def _content(token) -> str | None:
  """tokenizer_config.json writes a special token as a string or as {"content": ...}."""
  if isinstance(token, dict):
    return token.get("content")
  return token if isinstance(token, str) else None


def is_bundle(blob: bytes) -> bool:
  """Does `blob` hold an HF tokenizer bundle (as opposed to a SentencePiece model proto)?"""
  return blob[:1] == b"{" and _FORMAT.encode() in blob[:200]


class HFTokenizer:
  """`tokenizers.Tokenizer` plus the special-token roles of its `tokenizer_config.json`."""

  kind = KIND

  def __init__(self, tokenizer_json: str, tokenizer_config: dict | None = None, path: str = ""):
    self._json = str(tokenizer_json)
    self.config = dict(tokenizer_config or {})
    self._tok = tokenizers.Tokenizer.from_str(self._json)
    self.path = str(path)
    self.sha256 = hashlib.sha256(self.to_bytes()).hexdigest()
    self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
    ids = {role: self._role_id(role) for role in ("bos", "eos", "pad", "unk")}
    self.bos_id, self.eos_id, self.unk_id = ids["bos"], ids["eos"], ids["unk"]
    self.pad_id = next((i for i in (ids["pad"], ids["bos"], ids["eos"]) if i >= 0), 0)
    if self.eos_id < 0:
      raise ValueError(f"tokenizer {path or '<bytes>'}: tokenizer_config.json names no eos_token"
                       " the vocabulary has")

  def _role_id(self, role: str) -> int:
    piece = _content(self.config.get(f"{role}_token"))
    i = self._tok.token_to_id(piece) if piece else None
    return -1 if i is None else int(i)

  @classmethod
  def from_dir(cls, directory) -> "HFTokenizer":
    """A model directory's tokenizer.json (+ tokenizer_config.json when present)."""
    directory = Path(directory)
    tj = directory / "tokenizer.json"
    if not tj.is_file():
      raise FileNotFoundError(f"{tj}: no tokenizer.json (only fast HF tokenizers are supported)")
    tc = directory / "tokenizer_config.json"
    try:
      config = json.loads(tc.read_text()) if tc.is_file() else {}
    except json.JSONDecodeError as e:
      raise ValueError(f"{tc}:{e.lineno}: not valid JSON ({e.msg})") from None
    return cls(tj.read_text(), config, str(tj))

  @classmethod
  def from_bytes(cls, blob: bytes, path: str = "") -> "HFTokenizer":
    data = json.loads(blob.decode("utf-8"))
    if data.get("format") != _FORMAT:
      raise ValueError(f"tokenizer {path or '<bytes>'}: not an {_FORMAT} bundle")
    return cls(data["tokenizer_json"], data["tokenizer_config"], path)

  def to_bytes(self) -> bytes:
    """The bundle a checkpoint stores: tokenizer.json and tokenizer_config.json together."""
    return json.dumps({"format": _FORMAT, "tokenizer_config": self.config,
                       "tokenizer_json": self._json}, sort_keys=True).encode("utf-8")

  def save_pretrained(self, directory) -> None:
    """Write tokenizer.json and tokenizer_config.json (what `transformers` loads)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **self.config}
    for name, text in (("tokenizer.json", self._json),
                       ("tokenizer_config.json", json.dumps(config, indent=2))):
      tmp = directory / f".{name}.tmp"
      tmp.write_text(text)
      tmp.replace(directory / name)

  def encode(self, text: str) -> list[int]:
    return self._tok.encode(text, add_special_tokens=False).ids

  def decode(self, ids) -> str:
    drop = {self.bos_id, self.eos_id, self.pad_id}
    return self._tok.decode([int(i) for i in ids if int(i) not in drop],
                            skip_special_tokens=False)

  def token_id(self, piece: str) -> int:
    """The id of one piece; KeyError when the vocabulary lacks it."""
    i = self._tok.token_to_id(piece)
    if i is None:
      raise KeyError(f"tokenizer {self.path or '<bytes>'} has no piece {piece!r}")
    return int(i)

  def id_to_piece(self, i: int) -> str:
    return self._tok.id_to_token(int(i))

  def has_piece(self, piece: str) -> bool:
    return self._tok.token_to_id(piece) is not None

  def __getstate__(self):  # picklable, for grain worker processes
    return {"blob": self.to_bytes(), "path": self.path}

  def __setstate__(self, state):
    data = json.loads(state["blob"].decode("utf-8"))
    self.__init__(data["tokenizer_json"], data["tokenizer_config"], state["path"])

  def __repr__(self) -> str:
    return f"HFTokenizer({self.path or '<bytes>'}, vocab_size={self.vocab_size})"
