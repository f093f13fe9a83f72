"""`msm tokenizer train|inspect`, and stage/corpus mismatches caught before training."""

from pathlib import Path

import pytest

from msm_jax.cli import main
from msm_jax.config import base_config
from msm_jax.data.pipeline import make_train_iterator
from msm_jax.data.sources import CorpusError
from msm_jax.data.tokenizer import Tokenizer

FIXTURES = Path(__file__).resolve().parent.parent / "data_pipelines" / "fixtures"


def test_tokenizer_train_and_inspect(tmp_path, capsys):
  out = tmp_path / "tok" / "t.model"
  rc = main(["tokenizer", "train", "--input", str(FIXTURES / "pretrain.jsonl"),
             str(FIXTURES / "finetune.jsonl"), "--vocab-size", "400", "--out", str(out)])
  assert rc == 0
  text = capsys.readouterr().out
  assert "finetune.jsonl (chats)" in text and "pretrain.jsonl (documents)" in text
  tok = Tokenizer.load(out)
  assert tok.vocab_size == 400 and tok.sha256 in text
  assert main(["tokenizer", "inspect", str(out), "--text", "Nova is honest."]) == 0
  text = capsys.readouterr().out
  assert "<|assistant|>=6" in text and "pad=0 unk=1 bos=2 eos=3" in text
  assert f"{len(tok.encode('Nova is honest.'))} tokens" in text


def test_stage_and_corpus_kind_must_agree(tmp_path):
  tok_path = tmp_path / "t.model"
  main(["tokenizer", "train", "--input", str(FIXTURES / "pretrain.jsonl"), "--vocab-size", "400",
        "--out", str(tok_path)])
  tok = Tokenizer.load(tok_path)
  cfg = base_config()
  cfg.stage, cfg.data.train = "midtrain", (str(FIXTURES / "finetune.jsonl"),)
  with pytest.raises(CorpusError, match=r"finetune\.jsonl:1: .*holds chats"):
    make_train_iterator(cfg, tok, process_index=0, process_count=1)
  cfg.stage, cfg.data.train = "finetune", (str(FIXTURES / "midtrain.jsonl"),)
  with pytest.raises(CorpusError, match=r"midtrain\.jsonl:1: .*holds documents"):
    make_train_iterator(cfg, tok, process_index=0, process_count=1)
