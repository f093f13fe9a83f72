"""Small (~1.8M parameters): the size the speed benchmarks measure; minutes on a 2-core laptop."""

from msm_jax.config import base_config


def get_config():
  c = base_config()
  c.steps = 300
  c.batch_size = 16
  c.seq_len = 128
  c.learning_rate = 2e-3
  c.warmup_steps = 20
  c.checkpoint_every = 100
  c.log_every = 10
  c.eval_every = 100
  c.eval_batches = 4
  c.model.update(vocab_size=1024, d_model=192, n_layers=4, n_heads=6, n_kv_heads=2, mlp_dim=512)
  c.data.train = ("data_pipelines/fixtures/pretrain.jsonl",)
  c.data.eval = ("data_pipelines/fixtures/pretrain_eval.jsonl",)
  return c
