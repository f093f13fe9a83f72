"""`msm tokenizer train|inspect`: build a SentencePiece model from corpora, or look inside one."""

from __future__ import annotations

import argparse
import time

from msm_jax.data.chat import ALL_SPECIAL_TOKENS
from msm_jax.data.sources import KINDS, detect_kind, iter_texts


def add_tokenizer_parser(subparsers) -> None:
  parser = subparsers.add_parser("tokenizer", help="train or inspect a SentencePiece tokenizer")
  sub = parser.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)

  train = sub.add_parser("train", help="train a tokenizer on corpus files",
                         description="Train a BPE SentencePiece model (byte fallback, every chat "
                         "template's special tokens) on jsonl or TFDS corpora. Deterministic.")
  train.add_argument("--input", nargs="+", required=True, metavar="FILE",
                     help="corpora: .jsonl documents or chats, or TFDS dataset dirs (DIR[:split])")
  train.add_argument("--vocab-size", type=int, required=True, metavar="N")
  train.add_argument("--out", required=True, metavar="MODEL", help="where to write the .model")
  train.add_argument("--kind", choices=("auto",) + KINDS, default="auto",
                     help="corpus kind; auto detects it per file from its first record")
  train.add_argument("--text-field", default="text", help="document text field (default: text)")
  train.add_argument("--seed", type=int, default=0)
  train.set_defaults(func=_train)

  inspect = sub.add_parser("inspect", help="print a tokenizer's vocabulary facts",
                           description="Vocabulary size, hash, special-token ids, and optionally "
                           "how texts tokenise.")
  inspect.add_argument("model", metavar="MODEL")
  inspect.add_argument("--text", action="append", default=[],
                       help="a text to tokenise (repeatable)")
  inspect.set_defaults(func=_inspect)


class _Progress:
  """Counts texts as they stream into the trainer; prints a line every `every`."""

  def __init__(self, texts, every: int = 10_000):
    self.texts, self.every, self.n, self.chars = texts, every, 0, 0

  def __iter__(self):
    for t in self.texts:
      self.n += 1
      self.chars += len(t)
      if self.n % self.every == 0:
        print(f"  read {self.n:,} texts ({self.chars:,} characters)", flush=True)
      yield t


def _train(args: argparse.Namespace) -> int:
  from msm_jax.data.tokenizer import train_tokenizer

  def texts():
    for spec in args.input:
      kind = detect_kind(spec, args.text_field) if args.kind == "auto" else args.kind
      print(f"reading {spec} ({kind})", flush=True)
      yield from iter_texts(spec, kind, args.text_field)

  start = time.time()
  progress = _Progress(texts())
  tok = train_tokenizer(progress, args.out, args.vocab_size, seed=args.seed)
  print(f"trained on {progress.n:,} texts ({progress.chars:,} characters) in "
        f"{time.time() - start:.1f}s")
  print(f"wrote {tok.path}")
  print(f"  vocab_size {tok.vocab_size} (asked for {args.vocab_size})")
  print(f"  sha256     {tok.sha256}")
  return 0


def _inspect(args: argparse.Namespace) -> int:
  from msm_jax.data.tokenizer import Tokenizer
  tok = Tokenizer.load(args.model)
  print(f"{tok.path}")
  print(f"  vocab_size {tok.vocab_size}")
  print(f"  sha256     {tok.sha256}")
  print(f"  control    pad={tok.pad_id} unk={tok.unk_id} bos={tok.bos_id} eos={tok.eos_id}")
  specials = [(p, tok.token_id(p)) for p in ALL_SPECIAL_TOKENS if tok.has_piece(p)]
  print("  special    " + (" ".join(f"{p}={i}" for p, i in specials) or "(none)"))
  missing = [p for p in ALL_SPECIAL_TOKENS if not tok.has_piece(p)]
  if missing:
    print(f"  missing    {' '.join(missing)} (templates that need these cannot render)")
  for text in args.text:
    ids = tok.encode(text)
    print(f"\n{text!r}: {len(ids)} tokens, {len(text) / max(len(ids), 1):.2f} chars/token")
    print("  " + " ".join(f"{tok.id_to_piece(i)}={i}" for i in ids))
  return 0
