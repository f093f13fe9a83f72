"""Small builders shared by the tests: configs and synthetic packed batches."""

import numpy as np

from msm_jax.config import base_config


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
