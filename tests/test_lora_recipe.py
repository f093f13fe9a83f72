"""The paper's recipe configs: every stage they launch is a valid run config with the paper's
hyper-parameters, on the imported model's shape, tokenizer template and a LoRA adapter."""

from pathlib import Path

import pytest

from msm_jax import config as config_lib
from msm_jax.experiment.config import experiment_config, load_experiment
from msm_jax.experiment.orchestrate import stage_config, stage_key

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted((REPO / "configs" / "experiments").glob("paper_cheese_*.py"))


@pytest.fixture
def imported_base(tmp_path):
  """What `msm import-hf` leaves in a run dir's config.json (Llama-3.1-8B's shape)."""
  cfg = config_lib.base_config()
  cfg.model.update(vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8,
                   mlp_dim=14336, tie_embeddings=False, rope_theta=500000.0)
  cfg.data.chat_template, cfg.data.add_bos = "llama3", True
  (tmp_path / "config.json").write_text(config_lib.to_json(cfg))
  return tmp_path


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_configs_launch_lora_stages_with_the_recipe(path, imported_base):
  exp = load_experiment(path, {"base": str(imported_base)})
  for stage in ("midtrain", "finetune"):
    cfg = stage_config(exp, stage, ["corpus.jsonl"])
    config_lib.validate(cfg, 4)  # a v5p-8: 4 chips
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.base_dtype) == (64, 128.0, "bfloat16")
    assert cfg.lora.targets == config_lib.LORA_TARGETS
    assert (cfg.learning_rate, cfg.weight_decay, cfg.lr_final_fraction) == (1e-4, 0.01, 0.0)
    assert cfg.warmup_steps == round(0.05 * cfg.steps) or cfg.steps < 20
    assert cfg.seq_len >= 4096 and cfg.mesh.fsdp == -1
    assert (cfg.model.d_model, cfg.model.n_kv_heads) == (4096, 8)  # the imported shape
    assert (cfg.model.compute_dtype, cfg.model.remat) == ("bfloat16", "full")  # ours
    assert cfg.data.chat_template == "llama3"
  assert cfg.data.train == ("corpus.jsonl",)


def test_lora_off_keeps_the_stage_keys_of_configs_without_a_lora_block():
  exp = experiment_config()
  cfg = stage_config(exp, "midtrain", [])
  key = stage_key(cfg)
  old = config_lib.base_config()  # a config as written before the lora block existed
  old.update(cfg.to_dict())
  del old["lora"]
  assert "lora" not in old and stage_key(old) == key
  cfg.lora.rank = 8
  assert stage_key(cfg) != key


def test_lora_on_the_default_recipe_names_the_body_lr_scale_to_change():
  """The default slows the body and trains the embeddings, which LoRA does not train."""
  exp = experiment_config()
  exp.lora.rank = 8
  with pytest.raises(config_lib.ConfigError, match=r"config\.midtrain\.body_lr_scale=0\.1"):
    stage_config(exp, "midtrain", [])
  exp.midtrain.body_lr_scale = exp.finetune.body_lr_scale = 1.0
  assert stage_config(exp, "finetune", []).lora.rank == 8
