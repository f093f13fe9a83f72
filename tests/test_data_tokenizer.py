"""Tokenizer: deterministic training, exact round trips, fixed special-token ids."""

import json
import pickle
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from msm_jax.config import ConfigError, base_config
from msm_jax.data.chat import ALL_SPECIAL_TOKENS
from msm_jax.data.pipeline import build_tokenizer
from msm_jax.data.tokenizer import Tokenizer, train_tokenizer

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


def test_build_tokenizer_trains_reuses_and_checks_vocab(tmp_path):
  cfg = base_config()
  cfg.data.train = (str(FIXTURES / "pretrain.jsonl"),)
  tok = build_tokenizer(cfg, tmp_path)
  assert (tmp_path / "tokenizer.model").is_file() and tok.vocab_size <= 512
  mtime = (tmp_path / "tokenizer.model").stat().st_mtime_ns
  assert build_tokenizer(cfg, tmp_path).sha256 == tok.sha256  # reused, not retrained
  assert (tmp_path / "tokenizer.model").stat().st_mtime_ns == mtime
  big = train_tokenizer(fixture_texts(), tmp_path / "big.model", 700)
  assert big.vocab_size > 512
  cfg.data.tokenizer = big.path
  with pytest.raises(ConfigError, match="config.model.vocab_size"):
    build_tokenizer(cfg, tmp_path / "other")
  assert not (tmp_path / "other").exists()


def test_finetune_reuses_the_init_from_tokenizer(tmp_path):
  cfg = base_config()
  cfg.data.train = (str(FIXTURES / "pretrain.jsonl"),)
  mid = build_tokenizer(cfg, tmp_path / "mid")
  cfg.stage, cfg.init_from = "finetune", str(tmp_path / "mid" / "checkpoints")
  cfg.data.train = (str(FIXTURES / "finetune.jsonl"),)
  assert build_tokenizer(cfg, tmp_path / "ft").sha256 == mid.sha256
  assert (tmp_path / "ft" / "tokenizer.model").read_bytes() == mid.model_proto  # run dir has it
