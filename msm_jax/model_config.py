"""The model's shape and execution choices as a frozen, typed value, built once from a run config.

The run config (`config.model`, an ml_collections ConfigDict) is what users edit and what a
checkpoint records; the model never holds it. `ModelConfig.of(cfg.model)` resolves its defaults
(`head_dim=0` -> d_model // n_heads, `materialize_grads="auto"` -> on for the CPU backend only)
and hands the model a hashable value that nothing can change in place, so a jitted function
closed over it can never see a different model than the one it traced.

Which keys define the model (what its parameters are and what they compute) versus how it runs
is declared once, here: `EXECUTION_KEYS`. Resume and `init_from` compare the model-defining keys
(`identity`) of both runs and refuse a mismatch naming the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

# Keys of `config.model` that choose how the model executes, not its parameters or its function.
EXECUTION_KEYS = ("remat", "scan_layers", "attention_impl", "compute_dtype", "materialize_grads")


def _flag(value: Any, field: str) -> bool | None:
  """`materialize_grads`: True/False, or "auto" (None here, resolved by backend)."""
  if isinstance(value, bool):
    return value
  text = str(value).strip().lower()
  if text == "auto":
    return None
  if text in ("true", "1", "on", "yes"):
    return True
  if text in ("false", "0", "off", "no"):
    return False
  raise ValueError(f"config.model.{field}: true | false | auto, got {value!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  n_kv_heads: int
  head_dim: int  # resolved: never 0
  mlp_dim: int
  tie_embeddings: bool
  rope_theta: float
  norm_eps: float
  init_std: float
  param_dtype: str
  compute_dtype: str
  remat: str
  scan_layers: bool
  attention_impl: str
  materialize_grads: bool  # resolved: never "auto"
  # Architecture switches for imported base models (msm_jax/interop); the defaults are the
  # project's own decoder.
  qkv_bias: bool = False  # Qwen2/2.5: biases on the q, k, v projections
  qk_norm: bool = False  # Qwen3: RMSNorm over head_dim of q and k before rotary
  rope_scaling: str = ""  # "" (none) | "llama3"; the four rope_* below apply to llama3 only
  rope_factor: float = 8.0
  rope_low_freq_factor: float = 1.0
  rope_high_freq_factor: float = 4.0
  rope_original_context: int = 8192

  @classmethod
  def of(cls, cfg: "ModelConfig | Mapping") -> "ModelConfig":
    """From `config.model` (a ConfigDict or dict); a ModelConfig is returned as it is."""
    if isinstance(cfg, ModelConfig):
      return cfg
    d = {f.name: cfg[f.name] if f.name in cfg or f.default is dataclasses.MISSING else f.default
         for f in dataclasses.fields(cls)}
    d["head_dim"] = int(d["head_dim"]) or int(d["d_model"]) // int(d["n_heads"])
    flag = _flag(d["materialize_grads"], "materialize_grads")
    if flag is None:
      import jax  # noqa: PLC0415 (only an "auto" flag needs the backend)
      # An XLA:CPU fusion workaround (see model.materialize_grad); on other backends it only
      # adds a divide per gradient element.
      flag = jax.default_backend() == "cpu"
    d["materialize_grads"] = flag
    return cls(**d)


def identity(model_cfg: Mapping) -> dict:
  """The keys of `config.model` that define the model, with their values (head_dim resolved)."""
  d = {k: model_cfg[k] for k in model_cfg.keys() if k not in EXECUTION_KEYS}
  if "head_dim" in d and not d["head_dim"]:
    d["head_dim"] = int(d["d_model"]) // int(d["n_heads"])
  return d


def first_difference(model_cfg: Mapping, other: Mapping) -> tuple[str, Any, Any] | None:
  """The first model-defining key whose value differs: (key, ours, theirs), or None."""
  mine, theirs = identity(model_cfg), identity(other)
  for key in sorted(set(mine) | set(theirs)):
    if mine.get(key) != theirs.get(key):
      return key, mine.get(key), theirs.get(key)
  return None
