"""Checkpoint -> (config, sharded parameters, tokenizer), on whatever devices are present.

A checkpoint carries its run config and its tokenizer (see `msm_jax.checkpoint`), so a path is
all an evaluation needs. Only the parameters are read (an orbax partial restore): the optimizer
moments, twice the parameters' size, never touch device memory.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from msm_jax import sharding as shd
from msm_jax.checkpoint import open_run
from msm_jax.config import ConfigError, mesh_shape
from msm_jax.model import ModelDef


class NonFiniteError(ValueError):
  """NaN or infinite parameters or scores (a diverged run): refused, never reported as results."""


def check_finite(params, where: str) -> None:
  """Raise NonFiniteError naming `where` and the first non-finite parameter; one device fetch."""
  leaves = jax.tree_util.tree_leaves_with_path(params)
  finite = jax.device_get([jnp.isfinite(x).all() for _, x in leaves])
  bad = [jax.tree_util.keystr(path) for (path, _), ok in zip(leaves, finite) if not ok]
  if bad:
    raise NonFiniteError(
        f"{where}: {len(bad)} of {len(leaves)} parameter arrays hold NaN or infinite values "
        f"(first: {bad[0]}); the run diverged before this checkpoint, so it cannot be scored. "
        "Evaluate an earlier step (--step).")


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
  with open_run(path, step) as run:
    mesh = mesh if mesh is not None else default_mesh(run.config)
    params = run.restore_params(mesh)
    meta = {**run.meta, "checkpoint": str(run.path)}
    return run.config, params, run.tokenizer, mesh, meta
