"""Qwen3-32B (Qwen/Qwen3-32B config.json): 32.76B parameters, per-head q/k RMSNorm,
head_dim 128 != d_model / n_heads (80), untied.

The model fields equal what `msm import-hf` writes for the published checkpoint, so a run with
`--config.init_from=IMPORTED_WORKDIR` passes the model check. No weights ship with the project:
import them first (`msm import-hf --from HF_DIR --out WORKDIR`). Execution keys are set for an
accelerator slice; data, steps and the optimizer come from the experiment config built on this.
"""

from msm_jax.config import base_config


def get_config():
  c = base_config()
  c.model.update(
      vocab_size=151936, d_model=5120, n_layers=64, n_heads=64, n_kv_heads=8, head_dim=128,
      mlp_dim=25600, tie_embeddings=False, rope_theta=1000000.0, norm_eps=1e-6, qk_norm=True,
      compute_dtype="bfloat16", remat="full", scan_layers=True)
  c.data.chat_template = "chatml"
  c.data.add_bos = False
  c.data.tokenizer = ""  # the imported checkpoint carries its HF tokenizer
  return c
