"""`msm export-hf`: an msm-jax checkpoint -> a Hugging Face model directory transformers loads.

Writes `config.json`, safetensors in HF names and layouts (split into `model-0000k-of-0000n`
files with a `model.safetensors.index.json` above `max_shard_bytes`, else one
`model.safetensors`), and the tokenizer files. `export_params` is the seam for other parameter
sources: it takes any parameter tree of the model (e.g. LoRA-merged weights) and writes it; one
shard's tensors are on the host at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import numpy as np

from msm_jax.interop import hf_config, hf_layout
from msm_jax.interop.hf_import import INDEX_FILE, SINGLE_FILE

DEFAULT_SHARD_BYTES = 5 * 2**30  # transformers' own default max_shard_size
DTYPES = ("float32", "bfloat16", "float16")


def _host(x) -> np.ndarray:
  """A (possibly multi-host sharded) array -> the whole numpy array on this host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # noqa: PLC0415
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def _write_atomic(path: Path, write) -> None:
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  write(tmp)
  os.replace(tmp, path)


def _plan(params, model_cfg, itemsize: int, max_shard_bytes: int):
  """[(hf name, entry, layer index or None, nbytes)] grouped into shards under the size limit."""
  tensors = []
  for entry in hf_layout.entries(model_cfg):
    value = hf_layout.get_path(params, entry.path)
    per = int(np.prod(value.shape[1:] if entry.stacked else value.shape)) * itemsize
    layers = range(value.shape[0]) if entry.stacked else [None]
    tensors += [(entry.hf_name.format(i=i), entry, i, per) for i in layers]
  shards, current, size = [], [], 0
  for t in tensors:
    if current and size + t[3] > max_shard_bytes:
      shards.append(current)
      current, size = [], 0
    current.append(t)
    size += t[3]
  shards.append(current)
  return shards, sum(t[3] for t in tensors)


def export_params(params, model_cfg, out_dir, *, tokenizer=None, dtype: str = "float32",
                  max_shard_bytes: int = DEFAULT_SHARD_BYTES, max_positions: int = 0) -> Path:
  """Write `params` (the model's pure-dict parameter tree) as an HF model in `out_dir`."""
  from safetensors.numpy import save_file  # noqa: PLC0415
  import ml_dtypes  # noqa: PLC0415

  if dtype not in DTYPES:
    raise ValueError(f"export dtype: one of {DTYPES}, got {dtype!r}")
  np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
  out_dir = Path(out_dir)
  primary = jax.process_index() == 0
  if primary:
    out_dir.mkdir(parents=True, exist_ok=True)
  shards, total = _plan(params, model_cfg, np_dtype.itemsize, max_shard_bytes)
  names = [SINGLE_FILE] if len(shards) == 1 else [
      f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
  weight_map = {}
  for file_name, shard in zip(names, shards):
    tensors, cache = {}, {}
    for hf_name, entry, layer, _ in shard:
      if entry.path not in cache:  # one parameter on the host at a time
        cache.clear()
        cache[entry.path] = _host(hf_layout.get_path(params, entry.path))
      value = cache[entry.path] if layer is None else cache[entry.path][layer]
      tensors[hf_name] = hf_layout.to_hf(value, entry.layout).astype(np_dtype)
      weight_map[hf_name] = file_name
    if primary:
      _write_atomic(out_dir / file_name,
                    lambda p, t=tensors: save_file(t, str(p), metadata={"format": "pt"}))
    del tensors, cache
  if not primary:
    return out_dir
  if len(shards) > 1:
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _write_atomic(out_dir / INDEX_FILE, lambda p: p.write_text(json.dumps(index, indent=2)))
  bos = getattr(tokenizer, "bos_id", -1) if tokenizer is not None else -1
  eos = getattr(tokenizer, "eos_id", -1) if tokenizer is not None else -1
  config = hf_config.to_config_json(model_cfg, bos_id=bos, eos_id=eos, dtype=dtype,
                                    max_positions=max_positions)
  _write_atomic(out_dir / "config.json", lambda p: p.write_text(json.dumps(config, indent=2)))
  if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
    tokenizer.save_pretrained(out_dir)
  return out_dir


def export_checkpoint(path, out_dir, *, step: int | None = None, dtype: str = "float32",
                      max_shard_bytes: int = DEFAULT_SHARD_BYTES, max_positions: int = 0) -> Path:
  """A run workdir / checkpoint -> an HF model directory (full weights)."""
  from msm_jax.eval.loading import load_checkpoint  # noqa: PLC0415
  from msm_jax.model_config import ModelConfig  # noqa: PLC0415

  cfg, params, tokenizer, _, _ = load_checkpoint(path, step=step)
  return export_params(params, ModelConfig.of(cfg.model), out_dir, tokenizer=tokenizer,
                       dtype=dtype, max_shard_bytes=max_shard_bytes, max_positions=max_positions)


def run_export_command(args) -> int:
  out = export_checkpoint(args.workdir, args.out, step=args.step, dtype=args.dtype,
                          max_shard_bytes=int(args.max_shard_gb * 2**30),
                          max_positions=args.max_position_embeddings)
  print(f"exported {args.workdir} -> {out} (config.json, safetensors, tokenizer files)")
  return 0


def add_export_parser(subparsers) -> None:
  p = subparsers.add_parser("export-hf", help="export a checkpoint as a Hugging Face model",
                            description="Write a run's checkpoint as HF safetensors + "
                            "config.json + tokenizer files that transformers loads.")
  p.add_argument("--workdir", required=True, help="run directory, checkpoints dir or step dir")
  p.add_argument("--out", required=True, help="HF model directory to write")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--dtype", default="float32", choices=DTYPES, help="stored tensor dtype")
  p.add_argument("--max-shard-gb", type=float, default=5.0, help="split safetensors above this")
  p.add_argument("--max-position-embeddings", type=int, default=0,
                 help="config.json's context limit (default: the rotary context; Llama-3.1 "
                 "publishes 131072, Qwen2.5 131072, Qwen3 40960)")
  p.set_defaults(func=run_export_command)
