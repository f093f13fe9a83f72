"""Every sharding decision in one place: the mesh, the logical-axis rules, and helpers.

Parameters carry logical axis names (`vocab`, `embed`, `heads`, ...) as `axes` metadata; one
rules table maps each logical name to mesh axes. Activations are constrained with the same
table while a mesh is active (`with activate(mesh):`), and are left alone otherwise, so the model
runs unchanged on one device.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from msm_jax.config import mesh_shape

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axis (or tuple of mesh axes, or None = replicated).
LOGICAL_RULES = {
    "batch": ("data", "fsdp"),
    "length": None,
    "act_embed": None,  # the residual stream's feature axis
    "act_heads": "tensor",
    "act_mlp": "tensor",
    "act_vocab": "tensor",
    "embed": "fsdp",
    "vocab": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "mlp": "tensor",
    "layers": None,
    "cache_length": None,
}

_ACTIVE_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("mesh", default=None)


def make_mesh(cfg, devices=None) -> Mesh:
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(cfg, len(devices))
  grid = np.asarray(devices).reshape([sizes[a] for a in MESH_AXES])
  return Mesh(grid, MESH_AXES)


def logical_to_spec(logical_axes) -> P:
  """('embed', 'mlp') -> P('fsdp', 'tensor'), each mesh axis used at most once."""
  used, out = set(), []
  for name in logical_axes:
    target = LOGICAL_RULES[name] if name is not None else None
    targets = (target,) if isinstance(target, str) else tuple(target or ())
    targets = tuple(t for t in targets if t not in used)
    used.update(targets)
    out.append(None if not targets else targets[0] if len(targets) == 1 else targets)
  return P(*out)


def named_shardings(mesh: Mesh, logical_tree):
  """A tree of logical-axis tuples -> a tree of NamedShardings."""
  return jax.tree.map(lambda axes: NamedSharding(mesh, logical_to_spec(axes)), logical_tree,
                      is_leaf=lambda x: isinstance(x, tuple))


def batch_shards(mesh: Mesh) -> int:
  """How many ways the batch axis is split (data x fsdp): every batch is a multiple of this."""
  return int(mesh.shape["data"] * mesh.shape["fsdp"])


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(("batch", "length")))


@contextlib.contextmanager
def activate(mesh: Mesh):
  """Make `constrain` apply activation shardings while tracing under this mesh."""
  token = _ACTIVE_MESH.set(mesh)
  try:
    yield mesh
  finally:
    _ACTIVE_MESH.reset(token)


def active_mesh() -> Mesh | None:
  """The mesh set by `activate` (None outside it): kernels that must be shard_mapped read it."""
  return _ACTIVE_MESH.get()


def constrain(x, logical_axes):
  """Pin an activation's sharding (no-op when no mesh is active)."""
  mesh = _ACTIVE_MESH.get()
  if mesh is None:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(logical_axes)))


def host_local_to_global(batch: dict, mesh: Mesh) -> dict:
  """Assemble each host's slice of the batch into one global array sharded over (data, fsdp)."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch)
