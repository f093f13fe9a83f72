"""`msm import-hf --peft` and `msm export-hf --peft | --merge-lora` against transformers + peft on
a tiny random Llama-3 (llama3 rotary scaling, large init) built in code: a PEFT adapter imported
onto the imported base evaluates as `peft` does, and exports back to `peft` and to merged HF
weights with the same logits (float32, 1e-4)."""

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from msm_jax import cli  # noqa: E402
from msm_jax.checkpoint import open_run  # noqa: E402
from msm_jax.eval.loading import load_checkpoint  # noqa: E402
from msm_jax.model import ModelDef  # noqa: E402
from tests.hf_models import hf_logits, hf_model, save_hf  # noqa: E402

torch.set_num_threads(1)
HF_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def msm_logits(path, tokens):
  cfg, params, _, _, _ = load_checkpoint(path)
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  return np.asarray(ModelDef(cfg.model).apply(params, tokens, positions, np.ones_like(tokens))[0])


def test_peft_adapter_imported_onto_an_imported_base_and_exported_back(tmp_path):
  base = hf_model("llama", kv_heads=2, tie=False)
  src = save_hf(base, "llama", tmp_path / "hf")
  torch.manual_seed(3)
  pcfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=HF_NAMES, lora_dropout=0.0,
                         init_lora_weights=False)
  adapted = peft.get_peft_model(copy.deepcopy(base), pcfg).eval()
  adapted.save_pretrained(tmp_path / "adapter")
  tokens = np.random.default_rng(0).integers(0, 300, (2, 48))  # past the rotary context (32)
  want = hf_logits(adapted, tokens)
  assert np.abs(want - hf_logits(base, tokens)).max() > 1e-2

  run = tmp_path / "run"
  assert cli.main(["import-hf", "--from", str(src), "--out", str(run),
                   "--peft", str(tmp_path / "adapter")]) == 0
  with open_run(run) as r:  # a LoRA run on the imported base, in OUT/base
    assert r.is_lora and r.config.lora.rank == 4 and r.config.lora.alpha == 8.0
    assert r.meta["lora_base"]["path"] == str(run / "base" / "checkpoints" / "0")
  np.testing.assert_allclose(msm_logits(run, tokens), want, atol=1e-4, rtol=0)

  assert cli.main(["export-hf", "--workdir", str(run), "--out", str(tmp_path / "peft"),
                   "--peft"]) == 0
  config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
  assert config["base_model_name_or_path"] == str(src)
  again = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "peft").eval()
  np.testing.assert_allclose(hf_logits(again, tokens), want, atol=1e-5, rtol=0)

  assert cli.main(["export-hf", "--workdir", str(run), "--out", str(tmp_path / "merged"),
                   "--merge-lora"]) == 0
  merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged",
                                                             dtype=torch.float32).eval()
  np.testing.assert_allclose(hf_logits(merged, tokens), want, atol=1e-4, rtol=0)
  # a run without an adapter has none to export
  assert cli.main(["export-hf", "--workdir", str(run / "base"), "--out", str(tmp_path / "x"),
                   "--peft"]) == 2
