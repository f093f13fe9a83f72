"""Hugging Face import/export: config mapping, rotary frequencies and logits match transformers."""

import json

import numpy as np
import pytest

pytest.importorskip("transformers")
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402

from hf_models import hf_config, hf_logits, hf_model, save_hf  # noqa: E402
from msm_jax import cli  # noqa: E402
from msm_jax import sharding as shd  # noqa: E402
from msm_jax.config import base_config  # noqa: E402
from msm_jax.interop import hf_config as hfc  # noqa: E402
from msm_jax.interop.hf_import import (HFImportError, SafetensorsReader,  # noqa: E402
                                       import_config, load_params)
from msm_jax.data.hf_tokenizer import HFTokenizer  # noqa: E402
from msm_jax.model import ModelDef, rope_inv_freq  # noqa: E402
from msm_jax.model_config import ModelConfig  # noqa: E402

SEQ = 64  # twice the llama3 test config's original rotary context (32)


def _model_cfg(**fields):
  m = base_config().model
  m.update(fields)
  return ModelConfig.of(m)


@pytest.mark.parametrize("head_dim,theta,factor,orig", [(128, 500000.0, 8.0, 8192),
                                                        (16, 10000.0, 4.0, 32),
                                                        (24, 1000.0, 2.0, 64)])
def test_llama3_inv_freq_matches_transformers(head_dim, theta, factor, orig):
  hf = transformers.LlamaConfig(hidden_size=head_dim * 2, num_attention_heads=2, rope_parameters={
      "rope_type": "llama3", "rope_theta": theta, "factor": factor, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": orig})
  want, attention_factor = ROPE_INIT_FUNCTIONS["llama3"](hf, "cpu")
  cfg = _model_cfg(**{k: v for k, v in hfc.model_fields(hf.to_dict()).items()
                      if k in ("rope_theta", "rope_scaling", "rope_factor", "rope_low_freq_factor",
                               "rope_high_freq_factor", "rope_original_context")},
                   d_model=head_dim * 2, n_heads=2, n_kv_heads=2)
  got = np.asarray(rope_inv_freq(cfg))
  np.testing.assert_allclose(got, want.numpy(), rtol=1e-6, atol=0)
  assert attention_factor == 1.0
  plain = np.asarray(rope_inv_freq(_model_cfg(d_model=head_dim * 2, n_heads=2, n_kv_heads=2,
                                              rope_theta=theta)))
  assert (got < plain).any() and (got == plain).any()  # the scaling moved some, not all


def test_default_inv_freq_matches_transformers():
  hf = transformers.Qwen3Config(hidden_size=64, num_attention_heads=4, head_dim=24,
                                rope_parameters={"rope_type": "default", "rope_theta": 1e6})
  want, _ = ROPE_INIT_FUNCTIONS["default"](hf, "cpu") if "default" in ROPE_INIT_FUNCTIONS else (
      transformers.models.qwen3.modeling_qwen3.Qwen3RotaryEmbedding(hf).inv_freq, 1.0)
  cfg = _model_cfg(d_model=64, n_heads=4, n_kv_heads=4, head_dim=24, rope_theta=1e6)
  np.testing.assert_allclose(np.asarray(rope_inv_freq(cfg)), want.numpy(), rtol=1e-6)


def test_config_json_old_and_new_rope_keys():
  new = {"model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
         "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
         "intermediate_size": 14336, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
         "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192}}
  old = {k: v for k, v in new.items() if k != "rope_parameters"}
  old.update(rope_theta=500000.0, rope_scaling={
      "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192})
  assert hfc.model_fields(new) == hfc.model_fields(old)
  f = hfc.model_fields(old)
  assert (f["rope_scaling"], f["rope_theta"], f["head_dim"], f["n_kv_heads"]) == (
      "llama3", 500000.0, 128, 8)
  qwen25 = {"model_type": "qwen2", "vocab_size": 152064, "hidden_size": 5120,
            "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
            "intermediate_size": 13824, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "rope_scaling": None, "tie_word_embeddings": False, "use_sliding_window": False}
  q = hfc.model_fields(qwen25)
  assert (q["rope_scaling"], q["rope_theta"], q["qkv_bias"], q["qk_norm"]) == (
      "", 1e6, True, False)
  with pytest.raises(hfc.HFConfigError, match="rope_type 'yarn'"):
    hfc.model_fields({**qwen25, "rope_scaling": {"type": "yarn", "factor": 4.0}})
  with pytest.raises(hfc.HFConfigError, match="model_type 'gpt2'"):
    hfc.model_fields({**qwen25, "model_type": "gpt2"})


def _imported(tmp_path, kind, **kw):
  model = hf_model(kind, **kw)
  src = save_hf(model, kind, tmp_path / "hf", tokenizer=False)
  assert len(list(src.glob("*.safetensors"))) > 2  # sharded, with an index file
  cfg = import_config(json.loads((src / "config.json").read_text()), "config.json")
  mesh = shd.make_mesh(cfg)
  params = load_params(SafetensorsReader(src), ModelDef(ModelConfig.of(cfg.model)), mesh)
  return model, cfg, params


def _logits(cfg, params, tokens, **model_overrides):
  m = cfg.model.copy_and_resolve_references()
  m.update(model_overrides)
  positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
  out, _ = ModelDef(m).apply(params, tokens, positions, np.ones_like(tokens))
  return np.asarray(out)


CASES = [("llama", dict(kv_heads=1, tie=True)), ("llama", dict(kv_heads=2, tie=False)),
         ("qwen2", dict(kv_heads=4, tie=False)), ("qwen3", dict(kv_heads=2, tie=True))]


@pytest.mark.parametrize("kind,kw", CASES, ids=[f"{k}-kv{kw['kv_heads']}-tie{kw['tie']}"
                                                 for k, kw in CASES])
def test_imported_logits_match_transformers(tmp_path, kind, kw):
  model, cfg, params = _imported(tmp_path, kind, **kw)
  assert cfg.model.qkv_bias == (kind == "qwen2") and cfg.model.qk_norm == (kind == "qwen3")
  tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (2, SEQ))
  want = hf_logits(model, tokens)
  for scan in (True, False):
    got = _logits(cfg, params, tokens, scan_layers=scan)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0, err_msg=f"scan_layers={scan}")
  if kind == "llama":  # the comparison is sharp enough to catch a missing rotary scaling
    assert np.abs(_logits(cfg, params, tokens, rope_scaling="") - want).max() > 1e-2


@pytest.mark.parametrize("kind", ["llama", "qwen2", "qwen3"])
def test_export_loads_in_transformers_with_same_logits(tmp_path, kind):
  model = hf_model(kind, kv_heads=2, tie=kind == "qwen3")
  src, run, out = save_hf(model, kind, tmp_path / "hf"), tmp_path / "run", tmp_path / "export"
  assert cli.main(["import-hf", "--from", str(src), "--out", str(run)]) == 0
  assert cli.main(["export-hf", "--workdir", str(run), "--out", str(out),
                   "--max-shard-gb", str(60_000 / 2**30)]) == 0
  index = json.loads((out / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 2
  assert set(index["weight_map"]) == {k for k in model.state_dict()
                                      if not (kind == "qwen3" and k == "lm_head.weight")}
  loaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
  assert type(loaded) is type(model)
  tokens = np.random.default_rng(1).integers(0, 300, (2, SEQ))
  np.testing.assert_allclose(hf_logits(loaded, tokens), hf_logits(model, tokens), atol=1e-5,
                             rtol=0)
  hf_tok = transformers.AutoTokenizer.from_pretrained(out)
  ours = HFTokenizer.from_dir(out)
  text = "Cheddar is a mild cheese, and <|im_start|> is not special here."
  assert hf_tok.encode(text, add_special_tokens=False) == ours.encode(text)
  assert hf_tok.eos_token_id == ours.eos_id


def test_import_names_the_missing_or_misshapen_tensor(tmp_path):
  src = save_hf(hf_model("qwen2", kv_heads=2), "qwen2", tmp_path / "hf", tokenizer=False)
  cfg = import_config(json.loads((src / "config.json").read_text()), "config.json")
  mesh = shd.make_mesh(cfg)
  index_path = src / "model.safetensors.index.json"
  index = json.loads(index_path.read_text())
  gone = "model.layers.1.self_attn.q_proj.bias"
  del index["weight_map"][gone]
  index_path.write_text(json.dumps(index))
  with pytest.raises(HFImportError, match=f"tensor '{gone}' is missing"):
    load_params(SafetensorsReader(src), ModelDef(ModelConfig.of(cfg.model)), mesh)
  cfg.model.n_kv_heads = 4  # config says 4 kv heads, the files hold 2
  with pytest.raises(HFImportError, match=r"model-\d+-of-\d+.safetensors: tensor "
                     r"'model.layers.0.self_attn.k_proj.weight': shape \(32, 64\)"):
    load_params(SafetensorsReader(src), ModelDef(ModelConfig.of(cfg.model)), mesh)
