"""Qwen2.5-32B (Qwen/Qwen2.5-32B config.json): 32.76B parameters, q/k/v biases, untied."""

from msm_jax.interop.hf_config import published_model_config


def get_config():
  return published_model_config(
      "chatml", False, vocab_size=152064, d_model=5120, n_layers=64, n_heads=40, n_kv_heads=8,
      head_dim=128, mlp_dim=27648, tie_embeddings=False, rope_theta=1000000.0, qkv_bias=True)
