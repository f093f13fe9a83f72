"""Data shards that outlive the host count: the training data order belongs to the run, not to
how many hosts happen to run it.

The records of every train file are split into S data shards (`config.data.shards`; 0 = the
number of processes when the run starts, and a resumed run keeps the count it saved). Shard s
reads records s::S through its own Grain pipeline (`make_train_dataset` as host s of S) and
fills rows [s*B/S, (s+1)*B/S) of every global batch of B rows. A host owns rows
[p*B/P, (p+1)*B/P) of P hosts and runs the shards that cover them (when P divides S: S/P shards,
disjoint between hosts; otherwise a shard that straddles two hosts runs on both and each keeps
its own rows). So the global batches are the same for any host count, and:

* 2 hosts x 4 devices train on exactly the batches of 1 host x 8 devices (same S);
* the checkpoint stores the iterator state of every shard (grain's orbax handler, one file per
  process holding the states of the shards it ran), and a restore onto any number of hosts reads
  all the files and hands each host the states of its shards: the run continues with the very
  batches it would have seen without the change.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import grain
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from msm_jax.config import ConfigError

_PROCESS_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json$")


def host_shards(num_shards: int, batch_size: int, process_index: int, process_count: int
                ) -> tuple[range, int]:
  """(shards host p runs, the row of their concatenated batch where its own rows begin)."""
  if batch_size % num_shards:
    raise ConfigError(f"config.data.shards: {num_shards} shards cannot split a batch of "
                      f"{batch_size} rows evenly")
  per_shard, per_host = batch_size // num_shards, batch_size // process_count
  first_row = process_index * per_host
  first, last = first_row // per_shard, (first_row + per_host - 1) // per_shard
  return range(first, last + 1), first_row - first * per_shard


class ShardedIterator:
  """This host's rows of every global batch, from the data shards that cover them (lazy: built
  on the first batch, or by `set_state` with the saved shard count)."""

  def __init__(self, make_shard, *, num_shards: int, batch_size: int, process_index: int,
               process_count: int):
    self._make_shard = make_shard  # (shard, num_shards) -> grain DatasetIterator
    self._wanted = int(num_shards)  # 0: decided at build (process count) or by the checkpoint
    self.batch_size, self.pi, self.pc = batch_size, process_index, process_count
    self.num_shards = None
    self._iters: dict[int, object] = {}

  def _build(self, num_shards: int):
    if self._wanted and num_shards != self._wanted:
      raise ConfigError(f"config.data.shards: {self._wanted}, but the checkpoint being resumed "
                        f"was saved with {num_shards} data shards; set it to {num_shards} (or 0)")
    shards, self._offset = host_shards(num_shards, self.batch_size, self.pi, self.pc)
    self.num_shards = num_shards
    self._ended: set[int] = set()
    self._iters = {s: self._make_shard(s, num_shards) for s in shards}

  def _ensure_built(self):
    if self.num_shards is None:
      self._build(self._wanted or self.pc)

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    """With config.data.num_epochs > 0 a shard may end before the others: its rows are padding
    (segment 0) until every shard of this host has ended, so no record is left unread."""
    self._ensure_built()
    parts = {}
    for s, it in self._iters.items():
      if s not in self._ended:
        try:
          parts[s] = next(it)
        except StopIteration:
          self._ended.add(s)
    if not parts:
      raise StopIteration
    template = next(iter(parts.values()))
    batches = [parts[s] if s in parts else {k: np.zeros_like(v) for k, v in template.items()}
               for s in self._iters]
    rows = self.batch_size // self.pc
    if len(batches) == 1 and self._offset == 0 and self.batch_size // self.num_shards == rows:
      return batches[0]  # one shard per host: its batch is this host's rows
    return {k: np.concatenate([b[k] for b in batches])[self._offset:self._offset + rows]
            for k in template}

  def get_state(self) -> dict:
    self._ensure_built()
    return {"shards": self.num_shards,
            "states": {str(s): it.get_state() for s, it in self._iters.items()}}

  def set_state(self, state: dict) -> None:
    if "shards" not in state:  # a state saved before data shards: one shard per process
      raise ConfigError("data iterator state without shard count: use ShardedDataHandler")
    self._build(int(state["shards"]))
    missing = [s for s in self._iters if str(s) not in state["states"]]
    if missing:
      raise ConfigError(f"data iterator state: no saved state for data shard(s) {missing} "
                        f"of {self.num_shards}")
    for s, it in self._iters.items():
      it.set_state(state["states"][str(s)])

  def close(self) -> None:
    for it in self._iters.values():
      if hasattr(it, "close"):
        it.close()

  def start_prefetch(self) -> None:
    for it in self._iters.values():
      if hasattr(it, "start_prefetch"):
        it.start_prefetch()


def read_all_states(directory) -> dict:
  """Merge the per-process state files of one checkpoint into {shards, states of every shard}.

  A file from before data shards (a plain grain state in process_i-of-n.json) is shard i of n."""
  directory = epath.Path(directory)
  merged: dict = {"shards": None, "states": {}}
  for path in sorted(directory.iterdir()):
    match = _PROCESS_FILE.search(path.name)
    if not match:
      continue
    state = json.loads(path.read_text())
    if "shards" not in state:
      state = {"shards": int(match.group(2)), "states": {match.group(1): state}}
    if merged["shards"] not in (None, state["shards"]):
      raise ConfigError(f"{directory}: data state files disagree on the shard count "
                        f"({merged['shards']} vs {state['shards']} in {path.name})")
    merged["shards"] = state["shards"]
    merged["states"].update(state["states"])
  if merged["shards"] is None:
    raise ConfigError(f"{directory}: no data iterator state (process_*-of-*.json) found")
  return merged


class ShardedDataHandler(grain.checkpoint.CheckpointHandler):
  """grain's orbax handler (one state file per process), restoring from all of them so the
  number of processes may change between save and restore."""

  def save(self, directory, item=None, args=None):
    item = item or args.item
    if isinstance(item, ShardedIterator):
      from grain._src.core import sharding
      pi, pc = sharding.get_process_index_and_count()
      (epath.Path(directory) / f"process_{pi}-of-{pc}.json").write_text(
          json.dumps(item.get_state(), indent=1))
      return None
    return super().save(directory, item=item, args=args)

  def restore(self, directory, item=None, args=None):
    item = item or args.item
    if not isinstance(item, ShardedIterator):
      return super().restore(directory, item=item, args=args)
    item.set_state(read_all_states(directory))
    item.start_prefetch()
    return item


@ocp.args.register_with_handler(ShardedDataHandler, for_save=True)
@dataclasses.dataclass
class DataSave(ocp.args.CheckpointArgs):
  item: Any


@ocp.args.register_with_handler(ShardedDataHandler, for_restore=True)
@dataclasses.dataclass
class DataRestore(ocp.args.CheckpointArgs):
  item: Any
