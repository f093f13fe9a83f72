"""Self-describing checkpoints with orbax: state, resolved config, stage, tokenizer, data iterator.

Layout: `<workdir>/checkpoints/<step>/{state, config, meta, data}`. `state` restores onto any
mesh (the caller passes the target shardings), `config` is the run config as JSON, `meta` holds
the stage, step and the tokenizer model itself (so a checkpoint alone can be scored), and `data`
is the Grain iterator state of every host, so a resumed run continues from the exact next batch.
Saves are async and atomic (orbax writes to a temporary directory and renames it when complete).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import grain
from absl import logging as absl_logging
import jax
import orbax.checkpoint as ocp

from msm_jax.config import from_json, to_json


class CheckpointError(RuntimeError):
  pass


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: what orbax restores into."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpointer:
  """An orbax CheckpointManager for one run directory."""

  def __init__(self, directory, *, keep: int = 3, async_save: bool = True, read_only=False):
    self.directory = Path(directory).absolute()
    if not read_only and any(c in str(self.directory) for c in "[]"):
      # tensorstore reads such paths as patterns: the save succeeds, every restore fails
      raise ValueError(f"checkpoint directory {self.directory}: '[' or ']' in the path cannot "
                       "be restored by orbax/tensorstore; choose a workdir without brackets")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, save_interval_steps=0 if read_only else 1,
        create=not read_only, read_only=read_only,
        enable_async_checkpointing=async_save, cleanup_tmp_directories=not read_only)
    quiet = absl_logging.get_verbosity()
    if read_only:  # orbax warns that a read-only manager is read-only
      absl_logging.set_verbosity(absl_logging.ERROR)
    try:
      self.manager = ocp.CheckpointManager(
          self.directory, options=options, item_names=("state", "config", "meta", "data"),
          item_handlers={"data": grain.checkpoint.CheckpointHandler()})
    finally:
      absl_logging.set_verbosity(quiet)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, cfg, *, stage: str, tokenizer=None, data_iter=None,
           extra: dict | None = None) -> None:
    meta = {"stage": stage, "step": int(step), **(extra or {})}
    if tokenizer is not None:
      blob = Path(tokenizer.path).read_bytes()
      meta["tokenizer_sha256"] = hashlib.sha256(blob).hexdigest()
      meta["tokenizer_model_b64"] = base64.b64encode(blob).decode("ascii")
    items = {"state": ocp.args.StandardSave(state),
             "config": ocp.args.JsonSave(json.loads(to_json(cfg))),
             "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)

  def read_config_and_meta(self, step: int | None = None):
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint found")
    out = self.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    return from_json(json.dumps(out["config"])), out["meta"]

  def restore_state(self, step: int, abstract_state, data_iter=None):
    """Restore the state into `abstract_state`'s shapes and shardings (and the iterator in place)."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def find_checkpoint(path) -> tuple[Path, int | None]:
  """A run workdir, its `checkpoints/` dir, or one step's dir -> (checkpoints dir, step)."""
  path = Path(path).absolute()
  if (path / "checkpoints").is_dir():
    return path / "checkpoints", None
  if (path / "state").is_dir() and path.name.isdigit():
    return path.parent, int(path.name)
  if path.is_dir() and any(p.name.isdigit() for p in path.iterdir()):
    return path, None
  raise CheckpointError(f"{path}: not a run workdir, checkpoints directory or checkpoint step")


def write_tokenizer(meta: dict, dest: Path) -> Path:
  """Write the tokenizer a checkpoint carries to `dest` (if not already there) and return it."""
  if "tokenizer_model_b64" not in meta:
    raise CheckpointError("checkpoint carries no tokenizer")
  blob = base64.b64decode(meta["tokenizer_model_b64"])
  dest = Path(dest)
  if not dest.exists() or dest.read_bytes() != blob:
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(blob)
    tmp.replace(dest)
  return dest
