"""Hugging Face `config.json` <-> `config.model` for the Llama-3.x, Qwen2/2.5 and Qwen3 families.

Rotary settings are read from the newer `rope_parameters` block (transformers 5) or from the
older top-level `rope_theta` / `rope_scaling` keys (e.g. Qwen2.5's published configs); anything
this decoder would compute differently (o_proj or MLP biases, sliding windows, other rotary
types, another activation) is refused with the field that asks for it.
"""

from __future__ import annotations

import json
from pathlib import Path

# model_type -> (architecture class, chat template, prepend BOS to documents)
FAMILIES = {
    "llama": ("LlamaForCausalLM", "llama3", True),
    "qwen2": ("Qwen2ForCausalLM", "chatml", False),
    "qwen3": ("Qwen3ForCausalLM", "chatml", False),
}


class HFConfigError(ValueError):
  """A config.json this decoder cannot reproduce exactly; the message names the field."""


def read_config_json(directory) -> dict:
  path = Path(directory) / "config.json"
  if not path.is_file():
    raise HFConfigError(f"{path}: not found (is this a Hugging Face model directory?)")
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise HFConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def _rope(hf: dict, where: str) -> dict:
  """rope_parameters or rope_theta + rope_scaling -> the model's rope_* fields."""
  params = dict(hf.get("rope_parameters") or {})
  if not params:
    params = dict(hf.get("rope_scaling") or {})
    params.setdefault("rope_theta", hf.get("rope_theta", 10000.0))
  kind = params.get("rope_type", params.get("type", "default")) or "default"
  out = {"rope_theta": float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))}
  if kind == "default":
    return {**out, "rope_scaling": ""}
  if kind != "llama3":
    raise HFConfigError(f"{where}: rope_type {kind!r} is not supported (default | llama3)")
  try:
    return {**out, "rope_scaling": "llama3", "rope_factor": float(params["factor"]),
            "rope_low_freq_factor": float(params["low_freq_factor"]),
            "rope_high_freq_factor": float(params["high_freq_factor"]),
            "rope_original_context": int(params["original_max_position_embeddings"])}
  except KeyError as e:
    raise HFConfigError(f"{where}: llama3 rotary scaling needs {e.args[0]!r}") from None


def model_fields(hf: dict, where: str = "config.json") -> dict:
  """config.json (a dict) -> the `config.model` fields that define the same model."""
  kind = hf.get("model_type")
  if kind not in FAMILIES:
    raise HFConfigError(f"{where}: model_type {kind!r} is not supported ({sorted(FAMILIES)})")
  act = hf.get("hidden_act", "silu")
  if act != "silu":
    raise HFConfigError(f"{where}: hidden_act {act!r} is not supported (silu)")
  for flag in ("mlp_bias", "use_sliding_window"):
    if hf.get(flag):
      raise HFConfigError(f"{where}: {flag}=true is not supported")
  if hf.get("attention_bias") and kind != "qwen2":  # Llama / Qwen3 put it on o_proj as well
    raise HFConfigError(f"{where}: attention_bias=true is not supported for {kind}")
  n_heads = int(hf["num_attention_heads"])
  d_model = int(hf["hidden_size"])
  return {
      "vocab_size": int(hf["vocab_size"]),
      "d_model": d_model,
      "n_layers": int(hf["num_hidden_layers"]),
      "n_heads": n_heads,
      "n_kv_heads": int(hf.get("num_key_value_heads") or n_heads),
      "head_dim": int(hf.get("head_dim") or d_model // n_heads),
      "mlp_dim": int(hf["intermediate_size"]),
      "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
      "norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
      "qkv_bias": kind == "qwen2",
      "qk_norm": kind == "qwen3",
      **_rope(hf, where),
  }


def family_of(model_cfg) -> str:
  """The HF model_type whose modules compute what `config.model` describes."""
  if model_cfg.qk_norm:
    return "qwen3"
  return "qwen2" if model_cfg.qkv_bias else "llama"


def to_config_json(model_cfg, *, bos_id: int = -1, eos_id: int = -1, dtype: str = "float32",
                   max_positions: int = 0) -> dict:
  """`config.model` -> a config.json dict that transformers builds the same model from.

  `max_positions` (config.json's max_position_embeddings, a serving limit that does not change
  the weights' function) defaults to the rotary context: original x factor for llama3 scaling.
  """
  m = model_cfg
  kind = family_of(m)
  if m.qkv_bias and m.qk_norm:
    raise HFConfigError("config.model: qkv_bias and qk_norm together match no HF family")
  head_dim = int(m.head_dim) or m.d_model // m.n_heads
  rope = {"rope_type": "default", "rope_theta": float(m.rope_theta)}
  if m.rope_scaling == "llama3":
    rope.update(rope_type="llama3", factor=float(m.rope_factor),
                low_freq_factor=float(m.rope_low_freq_factor),
                high_freq_factor=float(m.rope_high_freq_factor),
                original_max_position_embeddings=int(m.rope_original_context))
  out = {
      "architectures": [FAMILIES[kind][0]], "model_type": kind,
      "vocab_size": int(m.vocab_size), "hidden_size": int(m.d_model),
      "num_hidden_layers": int(m.n_layers), "num_attention_heads": int(m.n_heads),
      "num_key_value_heads": int(m.n_kv_heads), "head_dim": head_dim,
      "intermediate_size": int(m.mlp_dim), "hidden_act": "silu",
      "rms_norm_eps": float(m.norm_eps), "tie_word_embeddings": bool(m.tie_embeddings),
      "max_position_embeddings": int(max_positions) or max(8192, int(
          m.rope_original_context * (m.rope_factor if m.rope_scaling else 1))),
      "attention_bias": False, "attention_dropout": 0.0, "initializer_range": float(m.init_std),
      "use_cache": True, "dtype": dtype,
      # Both spellings: rope_parameters for transformers >= 5, rope_theta/rope_scaling before.
      "rope_parameters": rope, "rope_theta": float(m.rope_theta),
      "rope_scaling": rope if m.rope_scaling else None,
  }
  if kind == "llama":
    out["mlp_bias"] = False
  else:
    out["use_sliding_window"] = False
  if bos_id >= 0:
    out["bos_token_id"] = int(bos_id)
  if eos_id >= 0:
    out["eos_token_id"] = int(eos_id)
  return out


def published_model_config(chat_template: str, add_bos: bool, **model):
  """The run config of a published base model (`configs/models/`): its shape as `msm import-hf`
  writes it (so `--config.init_from=IMPORTED_WORKDIR` passes the model check), its chat template,
  bf16 compute with full remat over an fsdp mesh, and the paper's optimiser (AdamW lr 1e-4, weight
  decay 0.01, 5% warmup of cosine) at sequence length 4,096. No weights ship with the project:
  import them first (`msm import-hf --from HF_DIR --out WORKDIR`), which also brings the tokenizer.
  """
  from msm_jax.config import base_config  # noqa: PLC0415 (the config schema imports nothing heavy)
  c = base_config()
  c.stage = "midtrain"
  c.batch_size, c.seq_len = 64, 4096
  c.learning_rate, c.weight_decay, c.lr_final_fraction = 1e-4, 0.01, 0.0
  c.warmup_steps = max(1, c.steps // 20)
  c.model.update(norm_eps=1e-5, compute_dtype="bfloat16", remat="full", scan_layers=True)
  c.model.update(**model)
  c.mesh.update(data=1, fsdp=-1, tensor=1)
  c.data.chat_template, c.data.add_bos = chat_template, add_bos
  c.data.tokenizer = ""  # the imported checkpoint carries its HF tokenizer
  return c
