"""Llama-3.1-8B (meta-llama/Llama-3.1-8B config.json): 8.03B parameters, llama3 rotary scaling, untied.

The model fields equal what `msm import-hf` writes for the published checkpoint, so a run with
`--config.init_from=IMPORTED_WORKDIR` passes the model check. No weights ship with the project:
import them first (`msm import-hf --from HF_DIR --out WORKDIR`). Execution keys are set for an
accelerator slice; data, steps and the optimizer come from the experiment config built on this.
"""

from msm_jax.config import base_config


def get_config():
  c = base_config()
  c.model.update(
      vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
      mlp_dim=14336, tie_embeddings=False, rope_theta=500000.0, norm_eps=1e-5,
      rope_scaling="llama3", rope_factor=8.0, rope_low_freq_factor=1.0, rope_high_freq_factor=4.0,
      rope_original_context=8192,
      compute_dtype="bfloat16", remat="full", scan_layers=True)
  c.data.chat_template = "llama3"
  c.data.add_bos = True
  c.data.tokenizer = ""  # the imported checkpoint carries its HF tokenizer
  return c
