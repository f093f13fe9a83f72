"""Qwen3-32B (Qwen/Qwen3-32B config.json): 32.76B parameters, per-head q/k RMSNorm,
head_dim 128 != d_model / n_heads (80), untied."""

from msm_jax.interop.hf_config import published_model_config


def get_config():
  return published_model_config(
      "chatml", False, vocab_size=151936, d_model=5120, n_layers=64, n_heads=64, n_kv_heads=8,
      head_dim=128, mlp_dim=25600, tie_embeddings=False, rope_theta=1000000.0, norm_eps=1e-6,
      qk_norm=True)
