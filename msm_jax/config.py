"""Run configs: the schema with its defaults, loading a config file, overrides, validation.

A run config is an `ml_collections.ConfigDict`. The keys a user reaches for most sit flat at the
top (`steps`, `batch_size`, `seq_len`, `learning_rate`, `checkpoint_every`, `seed`); the model
shape, the mesh and the data sources nest. Config files under `configs/` define `get_config()`
and start from `base_config()`, so every run config has every key and an override of a key that
does not exist is an error that names it.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import ml_collections

from msm_jax.model_config import ModelConfig

STAGES = ("pretrain", "midtrain", "finetune")
# Top-level keys that choose how a run executes and reports, not what it computes (the model's
# own execution keys are `model_config.EXECUTION_KEYS`): experiment stage keys ignore them.
EXECUTION_KEYS = ("progress_bar", "log_every", "checkpoint_every", "keep_checkpoints",
                  "async_checkpoints", "peak_flops", "eval_every", "eval_batches")


class ConfigError(ValueError):
  """A config that cannot run; the message names the field at fault."""


def model_config() -> ml_collections.ConfigDict:
  """A Llama-family decoder shape. `head_dim=0` means d_model // n_heads."""
  return ml_collections.ConfigDict(dict(
      vocab_size=512,
      d_model=64,
      n_layers=2,
      n_heads=4,
      n_kv_heads=2,
      head_dim=0,
      mlp_dim=192,
      tie_embeddings=True,
      rope_theta=10000.0,
      norm_eps=1e-5,
      init_std=0.02,
      param_dtype="float32",
      compute_dtype="float32",  # "bfloat16" on accelerators
      remat="none",  # none | full | save_dots
      scan_layers=True,
      attention_impl="xla",  # passed to jax.nn.dot_product_attention: xla | cudnn
      materialize_grads="auto",  # model.materialize_grad, a CPU backward-pass speed-up: auto = on CPU
      # Imported architectures (msm import-hf sets these from config.json):
      qkv_bias=False,  # Qwen2/2.5 q/k/v projection biases
      qk_norm=False,  # Qwen3 per-head q/k RMSNorm
      rope_scaling="",  # "" | llama3 (Llama-3.1 long-context rotary scaling; rope_* below)
      rope_factor=8.0,
      rope_low_freq_factor=1.0,
      rope_high_freq_factor=4.0,
      rope_original_context=8192,
  ))


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # The keys used most, flat.
  c.steps = 100
  c.batch_size = 8  # global batch, in packed rows
  c.seq_len = 128
  c.learning_rate = 1e-3
  c.checkpoint_every = 50
  c.seed = 0
  # Stage and initialisation.
  c.stage = "pretrain"  # pretrain | midtrain | finetune (the CLI's --stage sets it)
  c.init_from = ""  # another run's workdir or checkpoint dir: start from its parameters
  c.init_optimizer = "fresh"  # fresh | keep: with init_from, keep its optimizer state and step?
  # Optimisation.
  c.warmup_steps = 10
  c.lr_final_fraction = 0.1  # cosine decays to learning_rate * this
  c.weight_decay = 0.1
  c.grad_clip = 1.0
  c.adam_b1 = 0.9
  c.adam_b2 = 0.95
  c.adam_eps = 1e-8
  c.z_loss = 0.0
  c.microbatches = 1  # gradient accumulation: batch_size is split into this many
  # Loop.
  c.log_every = 1
  c.eval_every = 0  # 0: only at the end (when eval data is given)
  c.eval_batches = 4
  c.keep_checkpoints = 3
  c.async_checkpoints = True
  c.peak_flops = 0.0  # per device, for MFU; 0 measures it with a quick matmul probe
  c.progress_bar = True
  c.model = model_config()
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  c.data = ml_collections.ConfigDict(dict(
      train=(),  # files: .jsonl (documents or chats) or a TFDS array_record dataset dir
      train_weights=(),  # mixture weights, one per train file; () = equal
      eval=(),  # held-out files for the periodic eval loss
      kind="auto",  # documents | chats | auto (documents for pretrain/midtrain, chats for finetune)
      text_field="text",
      tokenizer="",  # a SentencePiece .model; "" trains one on the train files into the workdir
      chat_template="msm",  # msm | llama3 | chatml
      add_bos=True,
      shuffle=True,
      num_epochs=0,  # 0 repeats forever
      prefetch=2,
      worker_count=0,  # grain worker processes; 0 reads in the main process
  ))
  return c


def load_config(path: str | Path) -> ml_collections.ConfigDict:
  """Import a config file and call its `get_config()`."""
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(f"msm_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path}: defines no get_config()")
  cfg = module.get_config()
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
  return cfg


def _parse_value(text: str, current: Any, field: str) -> Any:
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, bool) and text.lower() in ("true", "false"):
      return text.lower() == "true"
    raise ConfigError(f"config.{field}: cannot parse {text!r} as {type(current).__name__}")
  if isinstance(current, bool):
    if not isinstance(value, bool):
      raise ConfigError(f"config.{field}: expected true/false, got {text!r}")
  elif isinstance(current, float) and isinstance(value, int):
    value = float(value)
  elif isinstance(current, tuple):
    value = tuple(value) if isinstance(value, (list, tuple)) else (value,)
  elif current is not None and not isinstance(value, type(current)):
    raise ConfigError(f"config.{field}: expected {type(current).__name__}, got {text!r}")
  return value


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
  """Set dotted `key=value` overrides; an unknown key is an error naming it."""
  for dotted, text in overrides.items():
    *parents, leaf = dotted.split(".")
    node = cfg
    for i, part in enumerate(parents):
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise ConfigError(f"unknown config field: config.{'.'.join(parents[:i + 1])}")
      node = node[part]
    if leaf not in node:
      raise ConfigError(f"unknown config field: config.{dotted}")
    with node.ignore_type():
      node[leaf] = _parse_value(text, node[leaf], dotted)


def _check_keys(cfg, reference, prefix=""):
  for key in cfg.keys():
    if key not in reference:
      raise ConfigError(f"unknown config field: config.{prefix}{key}")
    if isinstance(cfg[key], ml_collections.ConfigDict):
      _check_keys(cfg[key], reference[key], f"{prefix}{key}.")


def mesh_shape(cfg, num_devices: int) -> dict[str, int]:
  """Resolve the mesh axes (-1 = the rest of the devices)."""
  sizes = {a: int(cfg.mesh[a]) for a in ("data", "fsdp", "tensor")}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ConfigError(f"config.mesh: only one axis may be -1, got {free}")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  for axis, size in sizes.items():
    if size == 0 or size < -1:
      raise ConfigError(f"config.mesh.{axis}: must be a positive size or -1, got {size}")
  if free:
    if num_devices % fixed:
      raise ConfigError(f"config.mesh: fixed axes multiply to {fixed}, which does not divide "
                        f"the {num_devices} devices")
    sizes[free[0]] = num_devices // fixed
  if math.prod(sizes.values()) != num_devices:
    raise ConfigError(f"config.mesh: data*fsdp*tensor = {math.prod(sizes.values())} but there "
                      f"are {num_devices} devices")
  return sizes


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
  """Fail before any work, naming the field, on a config that cannot run."""
  _check_keys(cfg, base_config())
  m = cfg.model
  if cfg.stage not in STAGES:
    raise ConfigError(f"config.stage: must be one of {STAGES}, got {cfg.stage!r}")
  if cfg.init_optimizer not in ("fresh", "keep"):
    raise ConfigError(f"config.init_optimizer: must be fresh or keep, got {cfg.init_optimizer!r}")
  for field in ("steps", "batch_size", "seq_len", "microbatches", "log_every"):
    if int(cfg[field]) < 1:
      raise ConfigError(f"config.{field}: must be >= 1, got {cfg[field]}")
  if cfg.learning_rate <= 0:
    raise ConfigError(f"config.learning_rate: must be > 0, got {cfg.learning_rate}")
  if m.remat not in ("none", "full", "save_dots"):
    raise ConfigError(f"config.model.remat: none | full | save_dots, got {m.remat!r}")
  for field in ("param_dtype", "compute_dtype"):
    if m[field] not in ("float32", "bfloat16", "float16"):
      raise ConfigError(f"config.model.{field}: float32 | bfloat16 | float16, got {m[field]!r}")
  if m.n_heads % m.n_kv_heads:
    raise ConfigError(f"config.model.n_kv_heads: {m.n_kv_heads} does not divide "
                      f"n_heads={m.n_heads}")
  if not m.head_dim and m.d_model % m.n_heads:
    raise ConfigError(f"config.model.n_heads: {m.n_heads} does not divide d_model={m.d_model} "
                      "(or set config.model.head_dim)")
  if (m.head_dim or m.d_model // m.n_heads) % 2:
    raise ConfigError("config.model.head_dim: rotary embeddings need an even head_dim")
  if m.rope_scaling not in ("", "llama3"):
    raise ConfigError(f"config.model.rope_scaling: '' | llama3, got {m.rope_scaling!r}")
  if m.rope_scaling and not m.rope_low_freq_factor < m.rope_high_freq_factor:
    raise ConfigError("config.model.rope_high_freq_factor: must exceed rope_low_freq_factor, "
                      f"got {m.rope_high_freq_factor} <= {m.rope_low_freq_factor}")
  try:
    ModelConfig.of(m)  # resolves head_dim and the materialize_grads flag
  except ValueError as e:
    raise ConfigError(str(e)) from None
  mesh = mesh_shape(cfg, num_devices)
  batch_shards = mesh["data"] * mesh["fsdp"]  # = sharding.batch_shards of the mesh it makes
  if cfg.batch_size % cfg.microbatches:
    raise ConfigError(f"config.microbatches: {cfg.microbatches} does not divide "
                      f"batch_size={cfg.batch_size}")
  if (cfg.batch_size // cfg.microbatches) % batch_shards:
    raise ConfigError(f"config.batch_size: the microbatch of {cfg.batch_size // cfg.microbatches}"
                      f" rows cannot be split over data*fsdp = {batch_shards} devices")
  t = mesh["tensor"]
  for field in ("n_heads", "n_kv_heads", "mlp_dim", "vocab_size"):
    if m[field] % t:
      raise ConfigError(f"config.model.{field}: {m[field]} cannot be sharded over "
                        f"mesh.tensor={t}")
  if m.d_model % mesh["fsdp"]:
    raise ConfigError(f"config.model.d_model: {m.d_model} cannot be sharded over "
                      f"mesh.fsdp={mesh['fsdp']}")
  if cfg.data.train_weights and len(cfg.data.train_weights) != len(cfg.data.train):
    raise ConfigError("config.data.train_weights: need one weight per file in config.data.train")


def to_json(cfg: ml_collections.ConfigDict) -> str:
  return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
  """Rebuild a saved config on top of the current defaults (tuples stay tuples)."""
  cfg = base_config()
  saved = json.loads(text)

  def merge(node, values, prefix):
    for key, value in values.items():
      if key not in node:
        raise ConfigError(f"saved config has unknown field config.{prefix}{key}")
      if isinstance(node[key], ml_collections.ConfigDict):
        merge(node[key], value, f"{prefix}{key}.")
      else:
        with node.ignore_type():
          node[key] = tuple(value) if isinstance(value, list) else value

  merge(cfg, saved, "")
  return cfg
