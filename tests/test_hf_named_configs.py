"""configs/models/: the paper's base models, checked against their published config.json."""

from pathlib import Path

import pytest

from msm_jax.config import load_config
from msm_jax.interop.hf_import import import_config
from msm_jax.model import ModelDef
from msm_jax.model_config import first_difference

MODELS = Path(__file__).resolve().parent.parent / "configs" / "models"
_QWEN = dict(hidden_act="silu", rope_scaling=None, tie_word_embeddings=False,
             use_sliding_window=False, rope_theta=1000000.0)
# The published config.json values (Hugging Face hub), as transformers 4.4x wrote them.
PUBLISHED = {
    "llama3_1_8b": (dict(
        model_type="llama", vocab_size=128256, hidden_size=4096, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, intermediate_size=14336,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False, hidden_act="silu",
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                          high_freq_factor=4.0, original_max_position_embeddings=8192)),
        8_030_261_248),
    "qwen2_5_14b": (dict(_QWEN, model_type="qwen2", vocab_size=152064, hidden_size=5120,
                         num_hidden_layers=48, num_attention_heads=40, num_key_value_heads=8,
                         intermediate_size=13824, rms_norm_eps=1e-5), 14_770_033_664),
    "qwen2_5_32b": (dict(_QWEN, model_type="qwen2", vocab_size=152064, hidden_size=5120,
                         num_hidden_layers=64, num_attention_heads=40, num_key_value_heads=8,
                         intermediate_size=27648, rms_norm_eps=1e-5), 32_763_876_352),
    "qwen3_32b": (dict(_QWEN, model_type="qwen3", vocab_size=151936, hidden_size=5120,
                       num_hidden_layers=64, num_attention_heads=64, num_key_value_heads=8,
                       head_dim=128, intermediate_size=25600, rms_norm_eps=1e-6), 32_762_123_264),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_named_config_is_what_import_writes(name):
  cfg = load_config(MODELS / f"{name}.py")
  hf, params = PUBLISHED[name]
  imported = import_config(hf, f"{name} config.json")
  assert first_difference(cfg.model, imported.model) is None
  assert (cfg.data.chat_template, cfg.data.add_bos) == (imported.data.chat_template,
                                                        imported.data.add_bos)
  assert ModelDef(cfg.model).param_count() == params
