"""Tokenizer: deterministic training, exact round trips, fixed special-token ids."""

import json
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from msm_jax.config import base_config
from msm_jax.data.chat import ALL_SPECIAL_TOKENS
from msm_jax.data.pipeline import build_tokenizer
from msm_jax.data.tokenizer import (TOKENIZER_KINDS, Tokenizer, TokenizerKind, load_tokenizer_bytes,
                                    load_tokenizer_file, save_tokenizer_file, train_tokenizer)

FIXTURES = Path(__file__).resolve().parent.parent / "data_pipelines" / "fixtures"


def fixture_texts():
  with open(FIXTURES / "pretrain.jsonl") as f:
    return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return train_tokenizer(fixture_texts(), tmp_path_factory.mktemp("tok") / "t.model", 512)


def test_training_is_deterministic(tmp_path):
  a = train_tokenizer(fixture_texts(), tmp_path / "a.model", 512)
  b = train_tokenizer(iter(fixture_texts()), tmp_path / "b.model", 512)
  assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
  assert a.sha256 == b.sha256
  c = train_tokenizer(fixture_texts()[:100], tmp_path / "c.model", 512)
  assert c.sha256 != a.sha256
  assert not list(tmp_path.glob(".*tmp*")), "atomic write leaves no temporary file"


def test_special_ids(tok):
  assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
  for i, piece in enumerate(ALL_SPECIAL_TOKENS):
    assert tok.token_id(piece) == 4 + i
    assert tok.encode(f"a{piece}b")[1] == 4 + i  # one piece, even inside text
  with pytest.raises(KeyError, match="no piece"):
    tok.token_id("<|not_a_token|>")
  assert tok.vocab_size == 512


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\u2581",
                                      blacklist_categories=("Cs",)), max_size=80))
def test_round_trip(tok, text):
  ids = tok.encode(text)
  assert tok.unk_id not in ids  # byte fallback: nothing is unknown
  assert tok.decode(ids) == text


def test_load_and_pickle(tok):
  loaded = Tokenizer.load(tok.path)
  assert loaded.sha256 == tok.sha256 and loaded.vocab_size == tok.vocab_size
  clone = pickle.loads(pickle.dumps(tok))
  assert clone.encode("Nova is honest.") == tok.encode("Nova is honest.")
  with pytest.raises(FileNotFoundError):
    Tokenizer.load("/nonexistent/t.model")


def test_vocab_too_small(tmp_path):
  with pytest.raises(ValueError, match="too small"):
    train_tokenizer(fixture_texts(), tmp_path / "x.model", 100)


def test_build_tokenizer_trains_or_loads_the_explicit_path(tmp_path):
  cfg = base_config()
  cfg.data.train = (str(FIXTURES / "pretrain.jsonl"),)
  tok = build_tokenizer(cfg, tmp_path)
  assert (tmp_path / "tokenizer.model").read_bytes() == tok.to_bytes()
  assert tok.vocab_size <= 512 and tok.kind == "sentencepiece"
  assert build_tokenizer(cfg, tmp_path / "again").sha256 == tok.sha256  # deterministic
  big = train_tokenizer(fixture_texts(), tmp_path / "big.model", 700)
  cfg.data.tokenizer = big.path
  assert build_tokenizer(cfg, tmp_path / "other").sha256 == big.sha256
  assert not (tmp_path / "other").exists()  # the trainer writes it into the run, after its checks


def test_tokenizer_kinds_round_trip_bytes_and_files(tok, tmp_path, monkeypatch):
  again = load_tokenizer_bytes(tok.kind, tok.to_bytes(), "x")
  assert again.encode("Nova is honest.") == tok.encode("Nova is honest.") and again.path == "x"
  with pytest.raises(ValueError, match="unknown tokenizer kind 'nope'; known: sentencepiece"):
    load_tokenizer_bytes("nope", b"")
  saved = save_tokenizer_file(tok, tmp_path / "run")
  assert saved == tmp_path / "run" / "tokenizer.model" and saved.read_bytes() == tok.to_bytes()
  assert load_tokenizer_file(saved).sha256 == tok.sha256
  # Registering a kind is one entry; a file whose suffix matches its file name loads as it.
  loaded = []
  monkeypatch.setitem(TOKENIZER_KINDS, "other", TokenizerKind(
      lambda blob, path: loaded.append(path) or Tokenizer(blob, path), "tokenizer.other"))
  (tmp_path / "x.other").write_bytes(tok.to_bytes())
  assert load_tokenizer_file(tmp_path / "x.other").sha256 == tok.sha256
  assert loaded == [str(tmp_path / "x.other")]
