"""Checkpoint -> (config, sharded parameters, tokenizer), on whatever devices are present.

A checkpoint carries its run config and its tokenizer (see `msm_jax.checkpoint`), so a path is
all an evaluation needs. Only the parameters are read (an orbax partial restore): the optimizer
moments, twice the parameters' size, never touch device memory.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from msm_jax import sharding as shd
from msm_jax.checkpoint import CheckpointError, Checkpointer, abstract_like, find_checkpoint
from msm_jax.config import ConfigError, mesh_shape
from msm_jax.data.hf_tokenizer import tokenizer_from_bytes
from msm_jax.model import ModelDef


def default_mesh(cfg, devices=None):
  """The run's own mesh layout over the present devices when it fits, else pure data parallel.

  A model trained with tensor=4 on a pod is usually evaluated on fewer devices: then every
  device holds the whole model and takes a slice of the batch.
  """
  devices = list(jax.devices() if devices is None else devices)
  try:
    sizes = mesh_shape(cfg, len(devices))
    m = cfg.model
    fits = all(m[f] % sizes["tensor"] == 0 for f in ("n_heads", "n_kv_heads", "mlp_dim",
                                                       "vocab_size"))
    if fits and m.d_model % sizes["fsdp"] == 0:
      return shd.make_mesh(cfg, devices)
  except ConfigError:
    pass
  grid = np.asarray(devices).reshape(len(devices), 1, 1)
  return jax.sharding.Mesh(grid, shd.MESH_AXES)


def shard_params(params, model_def: ModelDef, mesh):
  """Place a parameter tree (numpy or jax arrays) with the training layout on `mesh`."""
  shardings = shd.named_shardings(mesh, model_def.axes)
  return jax.device_put(params, shardings)


def load_checkpoint(path, mesh=None, step: int | None = None):
  """A run workdir, checkpoints dir or step dir -> (cfg, params, tokenizer, mesh, meta)."""
  directory, found_step = find_checkpoint(path)
  ckpt = Checkpointer(directory, read_only=True)
  try:
    step = step if step is not None else found_step
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{path}: no checkpoint found")
    cfg, meta = ckpt.read_config_and_meta(step)
    model_def = ModelDef(cfg.model)
    mesh = mesh if mesh is not None else default_mesh(cfg)
    shardings = shd.named_shardings(mesh, model_def.axes)
    target = {"params": abstract_like(model_def.pure_abstract(), shardings)}
    restored = ckpt.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True)))
    params = restored["state"]["params"]
  finally:
    ckpt.close()
  if "tokenizer_model_b64" not in meta:
    raise CheckpointError(f"{path}: checkpoint step {step} carries no tokenizer")
  tokenizer = tokenizer_from_bytes(base64.b64decode(meta["tokenizer_model_b64"]),
                        str(Path(directory) / str(step) / "meta"))
  meta = {k: v for k, v in meta.items() if k != "tokenizer_model_b64"}
  meta["checkpoint"] = str(Path(directory) / str(step))
  return cfg, params, tokenizer, mesh, meta
