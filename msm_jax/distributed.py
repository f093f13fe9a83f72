"""Multi-host: start JAX's distributed runtime from flags or the environment, and the few
cross-process agreements the training loop needs (who writes, when everyone stops).

One process per host. TPU pods find their peers themselves (`jax.distributed.initialize()` with
no arguments); CPU and GPU clusters name a coordinator `host:port`, the process count and this
process's id, by flags of `msm train --distributed` or by the environment variables below
(`msm launch-local` sets them). On CPU the cross-process collectives are Gloo's.
"""

from __future__ import annotations

import os

import jax
import numpy as np

ENV_COORDINATOR = "MSM_COORDINATOR"  # host:port of process 0's coordination service
ENV_NUM_PROCESSES = "MSM_NUM_PROCESSES"
ENV_PROCESS_ID = "MSM_PROCESS_ID"


class DistributedError(ValueError):
  """A distributed setting that cannot work (named by flag or environment variable)."""


def _int_env(name: str, value):
  if value is not None:
    return int(value)
  text = os.environ.get(name)
  if text is None or text == "":
    return None
  try:
    return int(text)
  except ValueError:
    raise DistributedError(f"{name}={text!r}: not an integer") from None


def settings(coordinator=None, num_processes=None, process_id=None) -> dict:
  """Explicit values, else MSM_* environment variables; all three or none (auto-detect)."""
  found = {"coordinator_address": coordinator or os.environ.get(ENV_COORDINATOR) or None,
           "num_processes": _int_env(ENV_NUM_PROCESSES, num_processes),
           "process_id": _int_env(ENV_PROCESS_ID, process_id)}
  given = [k for k, v in found.items() if v is not None]
  if given and len(given) != 3:
    missing = [k for k, v in found.items() if v is None]
    raise DistributedError(
        f"distributed: {', '.join(given)} given but not {', '.join(missing)} (flags "
        f"--coordinator/--num-processes/--process-id or {ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/"
        f"{ENV_PROCESS_ID}); give all three, or none on a TPU pod")
  if given and not 0 <= found["process_id"] < found["num_processes"]:
    raise DistributedError(f"distributed: process id {found['process_id']} not in "
                           f"[0, {found['num_processes']})")
  return {k: v for k, v in found.items() if v is not None}


def initialize(coordinator=None, num_processes=None, process_id=None) -> None:
  """Join the job: one call per process, before any other JAX call."""
  kwargs = settings(coordinator, num_processes, process_id)
  # CPU hosts (tests, CPU clusters) need a cross-process collectives library; TPU/GPU ignore it.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)


def is_primary() -> bool:
  """Process 0 writes what must be written once: config, metrics, tb events, tokenizer, done."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (no-op in one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def _any_fn(mesh):
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("p"))
  out = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return sharding, jax.jit(lambda x: x.max(), out_shardings=out)


class StopAgreement:
  """All processes stop at the same step when any one of them was asked to (SIGTERM).

  Each step every process contributes its flag to a max over processes that is dispatched now
  and read one step later, after the loop already waited for the previous step's metrics: no
  extra stall, and every process reads the same answer at the same step. In one process the
  flag is its own answer.
  """

  def __init__(self):
    self.multi = jax.process_count() > 1
    self._pending = None
    if self.multi:
      devices = np.asarray(jax.devices())
      self._mesh = jax.sharding.Mesh(devices, ("p",))
      self._sharding, self._max = _any_fn(self._mesh)
      self._local = len(jax.local_devices())

  def __call__(self, requested: bool) -> bool:
    if not self.multi:
      return bool(requested)
    local = np.full((self._local,), int(bool(requested)), np.int32)
    now = self._max(jax.make_array_from_process_local_data(self._sharding, local))
    previous, self._pending = self._pending, now
    return bool(previous is not None and int(jax.device_get(previous)))
