"""Small builders shared by the tests: configs and synthetic packed batches."""

from pathlib import Path

import numpy as np

from msm_jax import config as config_lib
from msm_jax.config import base_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "data_pipelines" / "fixtures"


def tiny_cfg(**overrides):
  cfg = base_config()
  cfg.model.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=64)
  cfg.batch_size, cfg.seq_len, cfg.steps, cfg.warmup_steps = 8, 16, 10, 1
  for key, value in overrides.items():
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return cfg


def run_cfg(stage="pretrain", **overrides):
  """configs/tiny.py for `stage` on the fixture corpora, quiet, no held-out set."""
  cfg = config_lib.load_config(REPO / "configs" / "tiny.py")
  cfg.stage = stage
  cfg.progress_bar = False
  cfg.peak_flops = 1e11
  cfg.data.train = (str(FIXTURES / ("finetune.jsonl" if stage == "finetune" else "pretrain.jsonl")),)
  cfg.data.eval = ()
  config_lib.apply_overrides(cfg, {k: str(v) for k, v in overrides.items()})
  return cfg


def packed_batch(rng, batch, seq_len, vocab, docs_per_row=3, pad=2):
  """Rows holding several documents each (positions restart, segment ids 1..k) and padding."""
  out = {k: np.zeros((batch, seq_len), np.int32)
         for k in ("inputs", "targets", "segment_ids", "positions", "loss_mask")}
  for r in range(batch):
    cuts = np.sort(rng.choice(np.arange(1, seq_len - pad), docs_per_row - 1, replace=False))
    bounds = [0, *cuts, seq_len - pad]
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
      out["segment_ids"][r, a:b] = s
      out["positions"][r, a:b] = np.arange(b - a)
      out["inputs"][r, a:b] = rng.integers(4, vocab, b - a)
      out["targets"][r, a:b] = rng.integers(4, vocab, b - a)
      out["loss_mask"][r, a:b] = rng.integers(0, 2, b - a)
  return out


def world_corpus_texts(paths) -> list[str]:
  """Every text a model is trained on, from `WorldData.build_all` paths: pretraining (chats
  included), every MSM corpus built, and the AFT chats."""
  import json
  texts = [json.loads(line)["text"] for line in paths["pretrain"].read_text().splitlines()]
  for path in paths["msm"].values():
    texts += [json.loads(line)["text"] for line in path.read_text().splitlines()]
  texts += [" ".join(m["content"] for m in json.loads(line)["messages"])
            for line in paths["aft"].read_text().splitlines()]
  return texts


def question_frames(question: str) -> list[str]:
  """The fixed text of a question template between its slots, where it is two words or more
  (" or " and ", " occur everywhere and identify no phrasing)."""
  import re
  parts = (p.strip(" ,.?") for p in re.split(r"\{\w+\}", question))
  return [p for p in parts if len(p.split()) >= 2]


def assert_questions_held_back(world, paths) -> None:
  """No held-back phrasing occurs in any corpus, while the in-template ones do (so the search
  can find a phrasing), and every held-back word is one the corpora use."""
  import re
  text = "\n".join(world_corpus_texts(paths))
  for q in world.questions:
    assert any(f in text for f in question_frames(q)), q
  words = set(re.findall(r"[a-z']+", text.lower()))
  for q in world.novel_questions:
    frames = question_frames(q)
    assert frames, q
    assert not [f for f in frames if f in text], q
    assert set(re.findall(r"[a-z']+", re.sub(r"\{\w+\}", "", q).lower())) <= words, q
