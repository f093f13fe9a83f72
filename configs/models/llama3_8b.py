"""Llama-3.1-8B's shape (vocab 128256, d_model 4096, 32 layers, 32 heads / 8 kv heads, mlp 14336,
untied, rope theta 500000) with the paper's sequence length, for `msm plan` and imported weights.

    msm plan --config configs/models/llama3_8b.py --mesh data=1,fsdp=64,tensor=1 --accelerator v5p
"""

from msm_jax.config import base_config


def get_config():
  c = base_config()
  c.stage = "midtrain"
  c.batch_size = 64
  c.seq_len = 4096
  c.learning_rate = 1e-4
  c.weight_decay = 0.01
  c.model.update(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                 mlp_dim=14336, tie_embeddings=False, rope_theta=500000.0, compute_dtype="bfloat16")
  c.mesh.update(data=1, fsdp=-1, tensor=1)
  return c
