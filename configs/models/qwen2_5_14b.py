"""Qwen2.5-14B (Qwen/Qwen2.5-14B config.json): 14.77B parameters, q/k/v biases, untied."""

from msm_jax.interop.hf_config import published_model_config


def get_config():
  return published_model_config(
      "chatml", False, vocab_size=152064, d_model=5120, n_layers=48, n_heads=40, n_kv_heads=8,
      head_dim=128, mlp_dim=13824, tie_embeddings=False, rope_theta=1000000.0, qkv_bias=True)
