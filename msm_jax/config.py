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
# Keys added after experiment stage keys existed, with the value under which a run computes what it
# computed before the key existed: a stage key leaves such a key out while it has that value, so
# a new switch that is off does not invalidate every cached stage.
NEUTRAL_VALUES = {
    "model.qkv_bias": False, "model.qk_norm": False, "model.rope_scaling": "",
    "model.rope_factor": 8.0, "model.rope_low_freq_factor": 1.0,
    "model.rope_high_freq_factor": 4.0, "model.rope_original_context": 8192,
    "body_lr_scale": 1.0,
}


def without_neutral(d: dict) -> dict:
  """`cfg.to_dict()` without the NEUTRAL_VALUES keys that hold their neutral value (in place)."""
  for dotted, neutral in NEUTRAL_VALUES.items():
    *parents, leaf = dotted.split(".")
    node = d
    for part in parents:
      node = node.get(part, {})
    if leaf in node and node[leaf] == neutral:
      del node[leaf]
  return d


# Top-level keys that choose how a run executes and reports, not what it computes (the model's
# own execution keys are `model_config.EXECUTION_KEYS`): experiment stage keys ignore them.
# `nonfinite`/`max_skipped_steps` are here too: they decide what a diverging run does, and a
# run that finishes without a non-finite step computes the same under any setting.
# The projections LoRA can adapt (PEFT's q_proj k_proj v_proj o_proj gate_proj up_proj down_proj).
LORA_TARGETS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
EXECUTION_KEYS = ("progress_bar", "log_every", "checkpoint_every", "keep_checkpoints",
                  "async_checkpoints", "peak_flops", "eval_every", "eval_batches",
                  "nonfinite", "max_skipped_steps")


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
      attention_impl="auto",  # auto | xla | splash | cudnn: see msm_jax/attention.py
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
  # Step size of every parameter but the token embeddings, relative to the learning rate: below
  # 1, a stage's new knowledge about a token (an assistant's name) is written into that token's
  # embedding rather than spread over the body (docs/experiment.md, "Where the value lives").
  c.body_lr_scale = 1.0
  c.z_loss = 0.0
  c.microbatches = 1  # gradient accumulation: batch_size is split into this many
  # A non-finite loss, gradient or parameter: "stop" the run at once (the last finite checkpoint
  # is kept), or "skip" that update (parameters and optimizer state unchanged) up to
  # max_skipped_steps times in a run, then stop.
  c.nonfinite = "stop"
  c.max_skipped_steps = 10
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
  # LoRA (msm_jax/lora.py): rank 0 = full fine-tuning; else only the adapters train.
  c.lora = ml_collections.ConfigDict(dict(
      rank=0,
      alpha=16.0,  # the adapter term is scaled by alpha / rank (PEFT's lora_alpha)
      dropout=0.0,  # on the adapter's input, as PEFT's lora_dropout
      targets=LORA_TARGETS,  # any subset of the seven projections
      base_dtype="",  # the frozen base's dtype: "" = model.param_dtype; "bfloat16" halves it
      # With init_from a LoRA run: False trains its adapter on (on its base); True merges it
      # into the base and starts a new adapter.
      new_adapter=False,
  ))
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
      shards=0,  # data shards (msm_jax/data/shards.py); 0 = process count at the run's start
  ))
  return c


def load_config(path: str | Path) -> ml_collections.ConfigDict:
  """Import a config file and call its `get_config()`."""
  path = Path(path)
  if not path.is_file():
    raise ConfigError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(f"msm_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"{path}:{e.lineno}: {e.msg}") from e
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


def _int(lo):
  return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo,
          f"an integer >= {lo}")


def _num(test, text):
  return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
          and test(v), f"a finite number {text}")


def _one_of(*choices):
  return lambda v: v in choices, " | ".join(choices)


_BOOL = (lambda v: isinstance(v, bool), "true or false")
_STR = (lambda v: isinstance(v, str), "a string")
_NAME = (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string")
_FILES = (lambda v: isinstance(v, (tuple, list)) and all(isinstance(f, str) and f for f in v),
          "a tuple of file paths")
_WEIGHTS = (lambda v: isinstance(v, (tuple, list)) and all(
    isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in v),
            "a tuple of finite weights >= 0")
_DTYPE = _one_of("float32", "bfloat16", "float16")

# Every leaf of base_config() but model.materialize_grads (true | false | auto, checked by
# ModelConfig.of): the test it must pass, and how that test reads in an error.
FIELD_RULES = {
    "steps": _int(1), "batch_size": _int(1), "seq_len": _int(1), "microbatches": _int(1),
    "log_every": _int(1), "checkpoint_every": _int(1), "keep_checkpoints": _int(1),
    "eval_batches": _int(1), "warmup_steps": _int(0), "eval_every": _int(0),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "learning_rate": _num(lambda v: v > 0, "> 0"),
    "lr_final_fraction": _num(lambda v: 0 <= v <= 1, "in [0, 1]"),
    "weight_decay": _num(lambda v: v >= 0, ">= 0"), "grad_clip": _num(lambda v: v >= 0, ">= 0"),
    "adam_b1": _num(lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_b2": _num(lambda v: 0 <= v < 1, "in [0, 1)"),
    "adam_eps": _num(lambda v: v > 0, "> 0"),
    "body_lr_scale": _num(lambda v: 0 <= v <= 1, "in [0, 1]"), "z_loss": _num(lambda v: v >= 0, ">= 0"),
    "peak_flops": _num(lambda v: v >= 0, ">= 0"),
    "stage": _one_of(*STAGES), "init_from": _STR, "init_optimizer": _one_of("fresh", "keep"),
    "async_checkpoints": _BOOL, "progress_bar": _BOOL,
    "nonfinite": _one_of("stop", "skip"), "max_skipped_steps": _int(0),
    "model.vocab_size": _int(1), "model.d_model": _int(1), "model.n_layers": _int(1),
    "model.n_heads": _int(1), "model.n_kv_heads": _int(1), "model.head_dim": _int(0),
    "model.mlp_dim": _int(1), "model.tie_embeddings": _BOOL,
    "model.rope_theta": _num(lambda v: v > 0, "> 0"),
    "model.norm_eps": _num(lambda v: v > 0, "> 0"),
    "model.init_std": _num(lambda v: v > 0, "> 0"),
    "model.param_dtype": _DTYPE, "model.compute_dtype": _DTYPE,
    "model.remat": _one_of("none", "full", "save_dots"), "model.scan_layers": _BOOL,
    "model.attention_impl": _one_of("auto", "xla", "splash", "cudnn"),
    "mesh.data": (lambda v: isinstance(v, int) and (v >= 1 or v == -1), "a size >= 1 or -1"),
    "mesh.fsdp": (lambda v: isinstance(v, int) and (v >= 1 or v == -1), "a size >= 1 or -1"),
    "mesh.tensor": (lambda v: isinstance(v, int) and (v >= 1 or v == -1), "a size >= 1 or -1"),
    "data.train": _FILES, "data.train_weights": _WEIGHTS, "data.eval": _FILES,
    "data.kind": _one_of("auto", "documents", "chats"), "data.text_field": _NAME,
    "data.tokenizer": _STR, "data.chat_template": _one_of("msm", "llama3", "chatml"),
    "data.add_bos": _BOOL, "data.shuffle": _BOOL, "data.num_epochs": _int(0),
    "data.prefetch": _int(0), "data.worker_count": _int(0), "data.shards": _int(0),
}


def _check_fields(cfg) -> None:
  """Each field against FIELD_RULES; a field without a rule is left to the checks below."""
  for dotted, (test, text) in FIELD_RULES.items():
    value = cfg
    for part in dotted.split("."):
      if not isinstance(value, ml_collections.ConfigDict) or part not in value:
        break  # a missing field is the defaults' business, not a bad value
      value = value[part]
    else:
      if not test(value):
        raise ConfigError(f"config.{dotted}: must be {text}, got {value!r}")


def validate(cfg: ml_collections.ConfigDict, num_devices: int) -> None:
  """Fail before any work, naming the field, on a config that cannot run."""
  _check_keys(cfg, base_config())
  _check_fields(cfg)
  m = cfg.model
  if m.attention_impl == "splash" and cfg.seq_len % 128:
    raise ConfigError(f"config.seq_len: splash attention needs a multiple of 128, got "
                      f"{cfg.seq_len} (or set config.model.attention_impl=auto)")
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
  _validate_lora(cfg.lora, cfg.get("body_lr_scale", 1.0))
  if cfg.data.train_weights and len(cfg.data.train_weights) != len(cfg.data.train):
    raise ConfigError("config.data.train_weights: need one weight per file in config.data.train")


def _validate_lora(lora, cfg_body_lr_scale=1.0) -> None:
  if int(lora.rank) < 0:
    raise ConfigError(f"config.lora.rank: must be >= 0 (0 = off), got {lora.rank}")
  if not int(lora.rank):
    return
  if float(cfg_body_lr_scale) != 1.0:
    raise ConfigError("config.body_lr_scale: LoRA trains adapters only, not the embeddings; "
                      f"leave it at 1 with lora.rank > 0 (got {cfg_body_lr_scale})")
  if float(lora.alpha) <= 0:
    raise ConfigError(f"config.lora.alpha: must be > 0, got {lora.alpha}")
  if not 0.0 <= float(lora.dropout) < 1.0:
    raise ConfigError(f"config.lora.dropout: must be in [0, 1), got {lora.dropout}")
  targets = tuple(lora.targets)
  unknown = [t for t in targets if t not in LORA_TARGETS]
  if unknown or not targets or len(set(targets)) != len(targets):
    raise ConfigError(f"config.lora.targets: a non-empty subset of {LORA_TARGETS} without "
                      f"repeats, got {targets}")
  if lora.base_dtype not in ("", "float32", "bfloat16", "float16"):
    raise ConfigError("config.lora.base_dtype: '' | float32 | bfloat16 | float16, got "
                      f"{lora.base_dtype!r}")


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
