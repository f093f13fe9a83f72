"""Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json): 8.03B parameters, llama3 rotary scaling, untied.

    msm plan --config configs/models/llama3_1_8b.py --devices 64 --accelerator v5p
"""

from msm_jax.interop.hf_config import published_model_config


def get_config():
  return published_model_config(
      "llama3", True, vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
      head_dim=128, mlp_dim=14336, tie_embeddings=False, rope_theta=500000.0,
      rope_scaling="llama3", rope_factor=8.0, rope_low_freq_factor=1.0,
      rope_high_freq_factor=4.0, rope_original_context=8192)
