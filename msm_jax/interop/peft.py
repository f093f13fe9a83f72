"""PEFT LoRA adapter directories <-> msm-jax adapters (`msm_jax/lora.py`), without torch or peft.

A PEFT directory is `adapter_config.json` (r, lora_alpha, target_modules, ...) plus
`adapter_model.safetensors` with, per layer i and projection,
`base_model.model.model.layers.{i}.{self_attn|mlp}.{q|k|v|o|gate|up|down}_proj.lora_{A|B}.weight`,
A `[r, in]` and B `[out, r]`. msm-jax stores `a` `[L, *in, r]` and `b` `[L, r, *out]` (lora.py),
so each tensor is one transpose and reshape away. Only what the forward computes identically is
accepted: plain LoRA (no rsLoRA, DoRA, per-module rank/alpha patterns, layer subsets, trained
biases or extra modules); anything else is refused naming the `adapter_config.json` field.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from msm_jax.lora import PROJECTIONS, LoraConfig, LoraModel

PEFT_MODULES = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj",
                "wo": "self_attn.o_proj", "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj",
                "w_down": "mlp.down_proj"}
_BY_PEFT_NAME = {module.split(".")[1]: name for name, module in PEFT_MODULES.items()}
PREFIX = "base_model.model.model.layers"
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
# adapter_config.json fields that must hold these values for the forward to be plain LoRA
_PLAIN = {"use_rslora": (False, None), "use_dora": (False, None), "fan_in_fan_out": (False, None),
          "bias": ("none", None), "modules_to_save": (None, []), "layers_to_transform": (None, []),
          "rank_pattern": ({}, None), "alpha_pattern": ({}, None), "lora_bias": (False, None)}


class PeftError(ValueError):
  """An adapter directory msm-jax cannot read exactly; the message names the file and field."""


def to_peft_tensors(adapters: dict) -> dict[str, np.ndarray]:
  """msm-jax adapters (numpy or jax arrays) -> PEFT's safetensors keys and [r, in] / [out, r]."""
  out = {}
  for name, f in adapters.items():
    a, b = np.asarray(f["a"]), np.asarray(f["b"])
    r = a.shape[-1]
    for i in range(a.shape[0]):
      key = f"{PREFIX}.{i}.{PEFT_MODULES[name]}"
      out[f"{key}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, r).T)
      out[f"{key}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(r, -1).T)
  return out


def from_peft_tensors(tensors: dict, lora_model: LoraModel, where: str = WEIGHTS_FILE) -> dict:
  """PEFT tensors -> msm-jax adapters shaped as `lora_model` expects (float32 numpy)."""
  tensors = {k.replace(".default.", "."): v for k, v in tensors.items()}
  out, used = {}, set()
  for name, s in lora_model.pure_abstract().items():
    layers = []
    for factor in ("a", "b"):
      shape = s[factor].shape
      per_layer = []
      for i in range(shape[0]):
        key = f"{PREFIX}.{i}.{PEFT_MODULES[name]}.lora_{factor.upper()}.weight"
        if key not in tensors:
          raise PeftError(f"{where}: missing tensor {key}")
        r, rest = (shape[-1], shape[1:-1]) if factor == "a" else (shape[1], shape[2:])
        want = (r, int(np.prod(rest))) if factor == "a" else (int(np.prod(rest)), r)
        if tuple(tensors[key].shape) != want:
          raise PeftError(f"{where}: {key} has shape {tuple(tensors[key].shape)}, the model "
                          f"needs {want}")
        per_layer.append(np.asarray(tensors[key], np.float32).T.reshape(shape[1:]))
        used.add(key)
      layers.append(np.stack(per_layer))
    out[name] = {"a": layers[0], "b": layers[1]}
  extra = sorted(k for k in tensors if k not in used)
  if extra:
    raise PeftError(f"{where}: tensors this model has no adapter for, e.g. {extra[0]}")
  return out


def peft_config(spec: LoraConfig, base_model: str = "") -> dict:
  return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
          "r": spec.rank, "lora_alpha": spec.alpha, "lora_dropout": spec.dropout,
          "target_modules": sorted(PEFT_MODULES[t].split(".")[1] for t in spec.targets),
          "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
          "modules_to_save": None, "layers_to_transform": None, "rank_pattern": {},
          "alpha_pattern": {}, "init_lora_weights": True, "inference_mode": True}


def read_config(directory) -> LoraConfig:
  """`adapter_config.json` -> LoraConfig, refusing anything but plain LoRA on our projections."""
  path = Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise PeftError(f"{directory}: no {CONFIG_FILE} (not a PEFT adapter directory)")
  c = json.loads(path.read_text())
  if c.get("peft_type", "LORA") != "LORA":
    raise PeftError(f"{path}: peft_type {c.get('peft_type')!r}, only LORA is supported")
  for field, allowed in _PLAIN.items():
    if field in c and c[field] not in allowed:
      raise PeftError(f"{path}: {field}={c[field]!r} is not supported (plain LoRA only)")
  modules = c.get("target_modules")
  if isinstance(modules, str) or not modules:
    raise PeftError(f"{path}: target_modules must be a list of projection names, got {modules!r}")
  unknown = sorted(set(modules) - set(_BY_PEFT_NAME))
  if unknown:
    raise PeftError(f"{path}: target_modules {unknown} are not among {sorted(_BY_PEFT_NAME)}")
  targets = tuple(n for n in PROJECTIONS if PEFT_MODULES[n].split(".")[1] in modules)
  return LoraConfig(rank=int(c["r"]), alpha=float(c["lora_alpha"]),
                    dropout=float(c.get("lora_dropout", 0.0)), targets=targets)


def load_adapter(directory, model_def) -> tuple[dict, LoraConfig]:
  """A PEFT adapter directory -> (msm-jax adapters for `model_def`, its LoraConfig)."""
  spec = read_config(directory)
  path = Path(directory) / WEIGHTS_FILE
  if not path.is_file():
    raise PeftError(f"{directory}: no {WEIGHTS_FILE}")
  return from_peft_tensors(load_file(str(path)), LoraModel(model_def, spec), str(path)), spec


def save_adapter(directory, adapters: dict, spec: LoraConfig, base_model: str = "") -> Path:
  """Write a PEFT adapter directory `peft`'s `PeftModel.from_pretrained` loads (float32).

  Each file is written to a temporary name in the directory, then renamed."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  tensors = {k: v.astype(np.float32) for k, v in to_peft_tensors(adapters).items()}
  for name, write in ((WEIGHTS_FILE, lambda p: save_file(tensors, p, metadata={"format": "pt"})),
                      (CONFIG_FILE, lambda p: Path(p).write_text(
                          json.dumps(peft_config(spec, base_model), indent=2)))):
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    os.close(fd)
    try:
      write(tmp)
      os.replace(tmp, directory / name)
    except BaseException:
      Path(tmp).unlink(missing_ok=True)
      raise
  return directory


def export_run_adapter(path, out_dir, *, step: int | None = None) -> Path:
  """A LoRA run's adapter (`msm export-hf --peft`) -> a PEFT directory for its base model."""
  import jax  # noqa: PLC0415
  from msm_jax.checkpoint import open_run  # noqa: PLC0415

  with open_run(path, step) as run:
    if not run.is_lora:
      raise PeftError(f"{run.path}: not a LoRA run (config.lora.rank is 0); export its weights "
                      "with `msm export-hf` (no --peft)")
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(lambda _: one, run.trainable.axes, is_leaf=lambda x: isinstance(x, tuple))
    adapters = jax.device_get(run.restore_adapters(target))
    record = run.meta["lora_base"]
    with open_run(record["path"], record["step"]) as base_run:  # name the HF model it came from
      base_model = base_run.meta.get("imported_from", record["path"])
    return save_adapter(out_dir, adapters, run.trainable.spec, base_model)


def import_adapter_run(adapter_dir, base, out) -> Path:
  """`msm import-hf --peft`: a PEFT adapter on the msm-jax run `base` (e.g. an imported model)
  -> a LoRA run in `out` (checkpoint 0, stage midtrain) that evaluates as the adapted model and
  that `msm train --config.init_from=OUT --config.lora.rank=R` continues."""
  import jax  # noqa: PLC0415
  from msm_jax import sharding as shd  # noqa: PLC0415
  from msm_jax.checkpoint import Checkpointer, lora_base_record, open_run  # noqa: PLC0415
  from msm_jax.config import to_json  # noqa: PLC0415
  from msm_jax.data.tokenizer import save_tokenizer_file  # noqa: PLC0415
  from msm_jax.optim import make_optimizer  # noqa: PLC0415
  from msm_jax.train_step import TrainState, fresh_optimizer, state_shardings  # noqa: PLC0415

  out = Path(out).absolute()
  with open_run(base) as base_run:
    adapters, spec = load_adapter(adapter_dir, base_run.model_def)
    cfg = base_run.config.copy_and_resolve_references()
    cfg.lora.update(rank=spec.rank, alpha=spec.alpha, dropout=spec.dropout, targets=spec.targets)
    cfg.init_from, cfg.stage = str(base_run.path), "midtrain"
    mesh = shd.make_mesh(cfg)
    record = lora_base_record(base_run, base_run.restore_params(mesh))
    lm, tx = LoraModel(base_run.model_def, spec), make_optimizer(cfg)
    shardings = state_shardings(lm, tx, mesh)
    state = TrainState(step=None, params=jax.device_put(adapters, shardings.params),
                       opt_state=None,
                       rng=jax.device_put(jax.random.PRNGKey(cfg.seed), shardings.rng))
    state = fresh_optimizer(state, tx, mesh, lm)
    tokenizer = base_run.tokenizer
    out.mkdir(parents=True, exist_ok=True)
    save_tokenizer_file(tokenizer, out)
    ckpt = Checkpointer(out / "checkpoints", async_save=False)
    ckpt.save(0, state, cfg, stage="midtrain", tokenizer=tokenizer,
              extra={"lora_base": record, "imported_peft": str(Path(adapter_dir).absolute())})
    ckpt.close()
  if jax.process_index() == 0:
    (out / "config.json").write_text(to_json(cfg))
  return out
