"""Tiny: a ~100k-parameter model that trains in seconds on CPU. The tests use it."""

from msm_jax.config import base_config


def get_config():
  c = base_config()
  c.steps = 20
  c.batch_size = 8
  c.seq_len = 64
  c.learning_rate = 3e-3
  c.warmup_steps = 2
  c.checkpoint_every = 10
  c.log_every = 1
  c.eval_batches = 2
  c.model.update(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=192)
  c.data.train = ("data_pipelines/fixtures/pretrain.jsonl",)
  c.data.eval = ("data_pipelines/fixtures/pretrain_eval.jsonl",)
  return c
