"""Self-describing checkpoints with orbax: state, resolved config, stage, tokenizer, data iterator.

Layout: `<workdir>/checkpoints/<step>/{state, config, meta, data}`. `state` restores onto any
mesh (the caller passes the target shardings), `config` is the run config as JSON, `meta` holds
the stage, step and the tokenizer itself (`tokenizer_kind` and its bytes, so a checkpoint alone
can be scored), and `data` is the Grain iterator state of every data shard (one file per host;
msm_jax/data/shards.py), so a resumed run, on any host count, continues from the exact next
batch. Saves are async and atomic (orbax writes to a temporary directory and renames it when
complete).

Every reader of a run goes through `open_run` (or `Checkpointer.open_run`): resume, `init_from`
and evaluation alike.

A LoRA run (`config.lora.rank > 0`) stores only its adapters (and their optimizer moments); its
meta's `lora_base` names the checkpoint of the frozen base (`path`, `step`) and that base's
`lora.fingerprint`. `Run.restore_params` of a LoRA run is its base with the adapters merged in
(what evaluation and export read); a changed base is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import contextlib
import errno
import json
import re
from pathlib import Path

from absl import logging as absl_logging
import jax
import orbax.checkpoint as ocp

from msm_io import paths
from msm_jax import lora as lora_lib
from msm_jax import sharding as shd
from msm_jax.config import from_json, to_json
from msm_jax.data.shards import DataRestore, DataSave, ShardedDataHandler
from msm_jax.data.tokenizer import load_tokenizer_bytes
from msm_jax.model import ModelDef
from msm_jax.model_config import ModelConfig

LEGACY_TOKENIZER_KEY = "tokenizer_model_b64"  # meta written before tokenizer kinds: sentencepiece


class CheckpointError(RuntimeError):
  pass


# tensorstore reports a full disk as a ValueError whose text carries the OS error code.
_DISK_FULL = re.compile(r"No space left on device|Disk quota exceeded|os_error_code='(28|122)'")


def _disk_full(e: BaseException) -> bool:
  while e is not None:
    if (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or _DISK_FULL.search(str(e)):
      return True
    e = e.__cause__ or e.__context__
  return False


def abstract_like(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: what orbax restores into."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


class Checkpointer:
  """An orbax CheckpointManager for one run directory."""

  def __init__(self, directory, *, keep: int = 3, async_save: bool = True, read_only=False):
    self.directory = paths.path(directory)
    if not read_only and any(c in str(self.directory) for c in "[]"):
      # tensorstore reads such paths as patterns: the save succeeds, every restore fails
      raise CheckpointError(f"checkpoint directory {self.directory}: '[' or ']' in the path cannot "
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
          paths.native(self.directory), options=options,  # tensorstore resolves gs:// itself
          item_names=("state", "config", "meta", "data"),
          item_handlers={"data": ShardedDataHandler()})
    finally:
      absl_logging.set_verbosity(quiet)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, cfg, *, stage: str, tokenizer=None, data_iter=None,
           extra: dict | None = None) -> None:
    meta = {"stage": stage, "step": int(step), **(extra or {})}
    if tokenizer is not None:
      blob = tokenizer.to_bytes()
      meta["tokenizer_kind"] = tokenizer.kind
      meta["tokenizer_sha256"] = hashlib.sha256(blob).hexdigest()
      meta["tokenizer_b64"] = base64.b64encode(blob).decode("ascii")
    items = {"state": ocp.args.StandardSave(state),
             "config": ocp.args.JsonSave(json.loads(to_json(cfg))),
             "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items["data"] = DataSave(data_iter)
    with self._disk_errors(step):
      self.manager.save(int(step), args=ocp.args.Composite(**items), force=True)
    self._saving = int(step)

  @contextlib.contextmanager
  def _disk_errors(self, step=None):
    """A full disk during a save (this one, or an async one still in flight) -> one
    CheckpointError naming the directory, the step lost and the steps kept."""
    try:
      yield
    except Exception as e:
      if not _disk_full(e):
        raise
      self._failed = True
      lost = re.search(r"(\d+)\.orbax-checkpoint-tmp", str(e))
      lost = lost.group(1) if lost else (getattr(self, "_saving", None) or step)
      self.manager.reload()
      kept = [s for s in self.manager.all_steps() if s != int(lost or -1)]
      raise CheckpointError(
          f"{self.directory}: no space left on the device while saving checkpoint {lost}; "
          f"that save is incomplete (its temporary directory is removed on the next start), "
          f"the complete checkpoints ({', '.join(map(str, kept)) or 'none'}) are kept; free "
          "space and rerun the same command to resume from the newest") from e

  def open_run(self, step: int | None = None) -> "Run":
    """The run at `step` (default: the latest) read through this manager (left open)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{self.directory}: no checkpoint found")
    return Run(self, int(step), owns_checkpointer=False)

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    """Wait for an in-flight save, then release the manager (also on the way out of an error)."""
    reported = getattr(self, "_failed", False)  # raised by a save already: not again
    try:
      with self._disk_errors():
        self.manager.wait_until_finished()
    except CheckpointError:
      if not reported:
        raise
    finally:
      self.manager.close()


def find_checkpoint(path) -> tuple[Path, int | None]:
  """A run workdir, its `checkpoints/` dir, or one step's dir -> (checkpoints dir, step)."""
  path = paths.path(path)
  if (path / "checkpoints").is_dir():
    return path / "checkpoints", None
  if (path / "state").is_dir() and path.name.isdigit():
    return path.parent, int(path.name)
  if path.is_dir() and any(p.name.isdigit() for p in path.iterdir()):
    return path, None
  raise CheckpointError(f"{path}: not a run workdir, checkpoints directory or checkpoint step")


def open_run(path, step: int | None = None) -> "Run":
  """A run workdir, its `checkpoints/` dir or one step's dir -> that run, read-only.

  `step` (default: the step a step dir names, else the latest) picks the checkpoint. Close the
  run (or use it as a context manager) when done.
  """
  directory, found = find_checkpoint(path)
  ckpt = Checkpointer(directory, read_only=True)
  step = found if step is None else step
  try:
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f"{path}: no checkpoint found")
    return Run(ckpt, int(step), owns_checkpointer=True)
  except BaseException:
    ckpt.close()
    raise


def lora_base_record(run: "Run", base) -> dict:
  """What a LoRA run records of the base it trains on: `run`'s checkpoint and `base`'s
  fingerprint (`base`: the parameters `run.restore_params` gave)."""
  return {"path": str(run.path), "step": run.step, "fingerprint": lora_lib.fingerprint(base)}


def restore_lora_base(meta: dict, target, where: str):
  """The frozen base a LoRA run's meta names, placed by `target`, checked against its
  fingerprint (a base run re-trained or replaced in place is refused, not silently used)."""
  record = meta.get("lora_base")
  if not record:
    raise CheckpointError(f"{where}: a LoRA checkpoint without meta.lora_base (its base model)")
  try:
    with open_run(record["path"], record["step"]) as base_run:
      base = base_run.restore_params(target)
  except (CheckpointError, FileNotFoundError, ValueError) as e:
    raise CheckpointError(f"{where}: cannot read its LoRA base {record['path']} "
                          f"(meta.lora_base): {e}") from e
  if lora_lib.fingerprint(base) != record["fingerprint"]:
    raise CheckpointError(f"{where}: its LoRA base {record['path']} no longer holds the weights "
                          "the adapters were trained on (meta.lora_base.fingerprint differs)")
  return base


class Run:
  """One checkpoint of a run, read once: config, step, meta, tokenizer; restores on request."""

  def __init__(self, checkpointer: Checkpointer, step: int, *, owns_checkpointer: bool):
    self._ckpt, self._owns = checkpointer, owns_checkpointer
    self.step = step
    self.path = checkpointer.directory / str(step)
    out = checkpointer.manager.restore(step, args=ocp.args.Composite(
        config=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    self.config = from_json(json.dumps(out["config"]))
    meta = dict(out["meta"])
    blob = meta.pop("tokenizer_b64", None)
    legacy = meta.pop(LEGACY_TOKENIZER_KEY, None)
    self._tokenizer_kind = meta.get("tokenizer_kind", "sentencepiece")
    self._tokenizer_b64 = blob if blob is not None else legacy
    self.meta = meta  # stage, step, tokenizer_kind/sha256, ...: everything but the bytes

  @property
  def has_tokenizer(self) -> bool:
    return self._tokenizer_b64 is not None

  @functools.cached_property
  def tokenizer(self):
    """The tokenizer the run trained with (decoded once)."""
    if not self.has_tokenizer:
      raise CheckpointError(f"{self.path}: checkpoint carries no tokenizer; set "
                            "config.data.tokenizer to the one it was trained with")
    return load_tokenizer_bytes(self._tokenizer_kind, base64.b64decode(self._tokenizer_b64),
                                str(self.path / "meta"))

  @functools.cached_property
  def model_def(self) -> ModelDef:
    return ModelDef(ModelConfig.of(self.config.model))

  @functools.cached_property
  def trainable(self):
    """What the run trained: its `model_def`, or a `lora.LoraModel` over it (a LoRA run)."""
    return lora_lib.model_for(self.config, self.model_def)

  @property
  def is_lora(self) -> bool:
    return isinstance(self.trainable, lora_lib.LoraModel)

  def restore_params(self, target):
    """The model's parameters (an orbax partial restore: optimizer moments never touch device
    memory), placed by `target`: a Mesh (the training layout on it) or a shardings tree. A LoRA
    run's are its base's with its adapters merged in."""
    if isinstance(target, jax.sharding.Mesh):
      target = shd.named_shardings(target, self.model_def.axes)
    if not self.is_lora:
      return self._restore_params(self.model_def.pure_abstract(), target)
    base = restore_lora_base(self.meta, target, str(self.path))
    mesh = jax.tree.leaves(target)[0].mesh
    adapters = self.restore_adapters(shd.named_shardings(mesh, self.trainable.axes))
    return jax.jit(self.trainable.merge, out_shardings=target)(base, adapters)

  def restore_adapters(self, target):
    """A LoRA run's adapters (its `state.params`), placed by the shardings tree `target`."""
    return self._restore_params(self.trainable.pure_abstract(), target)

  def _restore_params(self, abstract, target):
    item = {"params": abstract_like(abstract, target)}
    # A manager binds an item to one handler on first use (restore_state's Standard one), and
    # only the PyTree handler restores part of a tree: a manager of its own for this read.
    reader = Checkpointer(self._ckpt.directory, read_only=True)
    try:
      restored = reader.manager.restore(self.step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(
              item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
              partial_restore=True)))
    finally:
      reader.close()
    return restored["state"]["params"]

  def restore_state(self, abstract_state, data_iter=None):
    """The full state into `abstract_state`'s shapes and shardings (and, when given, the data
    iterator's position in place): what resuming needs."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if data_iter is not None:
      items["data"] = DataRestore(data_iter)
    return self._ckpt.manager.restore(self.step, args=ocp.args.Composite(**items))["state"]

  def close(self):
    if self._owns:
      self._ckpt.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def __repr__(self) -> str:
    return f"Run({self.path}, stage={self.meta.get('stage')!r})"
