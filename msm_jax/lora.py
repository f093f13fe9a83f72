"""LoRA adapters on the stacked decoder: config, creation, the forward term, merging.

PEFT's convention, exactly: a target projection `y = x W` gains `(alpha / r) * (dropout(x) A) B`
with `A` kaiming-uniform (PEFT's `lora_A` init: U(-1/sqrt(in), 1/sqrt(in))) and `B` zeros, so a
fresh adapter leaves the model unchanged. The factors are stored so that PEFT's tensors are a
transpose and reshape away (`interop/peft.py`): for a weight laid out `[*in, *out]` (e.g. wq
`[D, N, H]`, wo `[N, H, D]`), `a` is `[L, *in, r]` (PEFT `lora_A` `[r, in]`, transposed) and `b`
is `[L, r, *out]` (PEFT `lora_B` `[out, r]`, transposed), with the weight's logical axes on the
in / out dims and the rank unsharded.

Why adapters are a separate tree, created stacked (not NNX variables inside the blocks): the base
model, its checkpoints and its `ModelDef` stay exactly what they are; the adapters carry their
own leading `layers` axis from creation, so `jax.lax.scan` slices them alongside the base's layer
stack (qwix creates adapters lazily inside the scanned body, which fails there), and the train
state holds only them (gradients, AdamW moments and checkpoint bytes are the adapter's).

Why the adapter is applied at the projection call sites (`delta`) rather than merging
`W + s A B` per layer inside the scan: the call-site form is exact with dropout (dropout is on the
adapter's input, which a merged weight cannot express), and the backward pass never forms a
weight-sized gradient for the frozen base (a per-layer merge computes dL/dW_eff, a full weight
gradient matmul per projection, only to contract it down to A and B). The extra forward cost is
two rank-r matmuls per projection. Merging (`merge`) is for export and evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib

import flax
import jax
import jax.numpy as jnp

from msm_jax.config import LORA_TARGETS

# projection -> (its group in the layer's params, how many leading weight axes are inputs)
PROJECTIONS = {"wq": ("attn", 1), "wk": ("attn", 1), "wv": ("attn", 1), "wo": ("attn", 2),
               "w_gate": ("mlp", 1), "w_up": ("mlp", 1), "w_down": ("mlp", 1)}
assert tuple(PROJECTIONS) == LORA_TARGETS


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """The adapter's hyper-parameters (from the run config's `lora` block)."""
  rank: int
  alpha: float
  dropout: float
  targets: tuple[str, ...]
  base_dtype: str = ""  # the frozen base's dtype; "" keeps the model's param_dtype

  @property
  def scale(self) -> float:
    return float(self.alpha) / int(self.rank)

  @classmethod
  def of(cls, lora_cfg) -> "LoraConfig | None":
    """From `config.lora`; None when rank is 0 (full fine-tuning)."""
    if int(lora_cfg["rank"]) == 0:
      return None
    return cls(rank=int(lora_cfg["rank"]), alpha=float(lora_cfg["alpha"]),
               dropout=float(lora_cfg["dropout"]), targets=tuple(lora_cfg["targets"]),
               base_dtype=str(lora_cfg["base_dtype"]))


@flax.struct.dataclass
class Adapters:
  """What the decoder's forward receives: factors (stacked [L, ...], or one layer's inside the
  scan), a dropout key (stacked [L, 2] per layer; None = no dropout) and the static scale/rate."""
  factors: dict
  key: jax.Array | None
  scale: float = flax.struct.field(pytree_node=False)
  dropout: float = flax.struct.field(pytree_node=False)

  def per_layer(self, n_layers: int) -> "Adapters":
    """Stacked factors with one dropout key per layer, ready to be scanned or sliced."""
    key = None if self.key is None else jax.random.split(self.key, n_layers)
    return self.replace(key=key)


def delta(adapters: Adapters | None, cdt, name: str, x):
  """One layer's adapter term for projection `name` of input `x` (0 when it has no adapter):
  `scale * (dropout(x) A) B`, contracting x's trailing input axes (D, or N and H for wo)."""
  if adapters is None or name not in adapters.factors:
    return 0
  a, b = adapters.factors[name]["a"].astype(cdt), adapters.factors[name]["b"].astype(cdt)
  if adapters.key is not None and adapters.dropout > 0:
    keep = 1.0 - adapters.dropout
    mask = jax.random.bernoulli(jax.random.fold_in(adapters.key, LORA_TARGETS.index(name)),
                                keep, x.shape)
    x = jnp.where(mask, x / keep, 0).astype(cdt)
  xa_BxTxR = jnp.tensordot(x, a, axes=a.ndim - 1) * adapters.scale
  return jnp.tensordot(xa_BxTxR, b, axes=1)


def _weights(tree, name):
  group, _ = PROJECTIONS[name]
  return tree["layers"][group][name]


class LoraModel:
  """A frozen base `ModelDef` plus adapters, shaped like a `ModelDef` for the train step:
  `params` (what is trained, checkpointed and optimised) are the adapters; the base is passed to
  `apply` as `base=`. `axes`, `pure_abstract()` and `init()` describe the adapters."""

  def __init__(self, model_def, spec: LoraConfig):
    self.model_def, self.spec, self.cfg = model_def, spec, model_def.cfg
    base_abstract, base_axes = model_def.pure_abstract(), model_def.axes
    self.base_axes = base_axes
    self._abstract, self.axes = {}, {}
    for name in spec.targets:
      w, axes = _weights(base_abstract, name), _weights(base_axes, name)  # [L, *in, *out]
      n_in = PROJECTIONS[name][1]
      l, ins, outs = w.shape[0], w.shape[1:1 + n_in], w.shape[1 + n_in:]
      # float32 masters whatever the base's dtype (an import may store it in bfloat16)
      self._abstract[name] = {"a": jax.ShapeDtypeStruct((l, *ins, spec.rank), jnp.float32),
                              "b": jax.ShapeDtypeStruct((l, spec.rank, *outs), jnp.float32)}
      self.axes[name] = {"a": (axes[0], *axes[1:1 + n_in], None),
                         "b": (axes[0], None, *axes[1 + n_in:])}

  def pure_abstract(self) -> dict:
    return dict(self._abstract)

  def base_abstract(self) -> dict:
    """The frozen base's shapes in `base_dtype`."""
    dtype = jnp.dtype(self.spec.base_dtype) if self.spec.base_dtype else None
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, dtype or s.dtype),
                        self.model_def.pure_abstract())

  def param_count(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self._abstract))

  def init(self, key) -> dict:
    """Fresh adapters: A kaiming-uniform (bound 1/sqrt(fan_in), PEFT's), B zeros."""
    out = {}
    for i, (name, s) in enumerate(sorted(self._abstract.items())):
      a, b = s["a"], s["b"]
      bound = 1.0 / (a.size // (a.shape[0] * self.spec.rank)) ** 0.5
      out[name] = {"a": jax.random.uniform(jax.random.fold_in(key, i), a.shape, a.dtype,
                                           -bound, bound),
                   "b": jnp.zeros(b.shape, b.dtype)}
    return out

  def prepare_base(self, base: dict) -> dict:
    """The base as the adapters train against it: cast to `base_dtype`."""
    dtype = jnp.dtype(self.spec.base_dtype) if self.spec.base_dtype else None
    return base if dtype is None else jax.tree.map(lambda w: w.astype(dtype), base)

  def apply(self, params, tokens_BxT, positions_BxT, segment_ids_BxT, cache=None,
            cache_index=None, *, base, rng=None):
    """The base model with adapters `params`; `rng` turns adapter dropout on (training)."""
    key = rng if self.spec.dropout > 0 else None
    adapters = Adapters(params, key, scale=self.spec.scale, dropout=self.spec.dropout)
    return self.model_def.apply(base, tokens_BxT, positions_BxT, segment_ids_BxT, cache,
                                cache_index, lora=adapters)

  def merge(self, base: dict, params: dict, dtype=None) -> dict:
    """Full parameters `W + (alpha/r) A B` for every target (f32 arithmetic), every leaf in
    `dtype` (default: the model's param_dtype): what export and evaluation read."""
    dtype = dtype or jnp.dtype(self.cfg.param_dtype)
    out = jax.tree.map(lambda w: w.astype(dtype), base)
    for name, f in params.items():
      a, b = f["a"].astype(jnp.float32), f["b"].astype(jnp.float32)
      ab = jax.vmap(lambda a_, b_: jnp.tensordot(a_, b_, axes=1))(a, b)  # [L, *in, *out]
      group, _ = PROJECTIONS[name]
      w = base["layers"][group][name].astype(jnp.float32)
      out["layers"][group][name] = (w + self.spec.scale * ab).astype(dtype)
    return out


@jax.jit
def _leaf_sums(tree):
  def one(x):
    uint = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[jnp.dtype(x.dtype).itemsize]
    bits = jax.lax.bitcast_convert_type(x, uint).astype(jnp.uint32)
    mult = jnp.arange(x.size, dtype=jnp.uint32).reshape(x.shape) * jnp.uint32(0x9E3779B1) | 1
    return jnp.sum(bits * mult, dtype=jnp.uint32)
  return jax.tree.map(one, tree)


def fingerprint(params) -> str:
  """A content hash of a parameter tree, computed where it lies (sharded on device): per leaf,
  the wrap-around uint32 sum of each element's bits times an odd multiplier of its position.
  Integer sums do not depend on reduction order, so every mesh gives the same value. A LoRA run
  records its base's fingerprint and refuses to resume or merge onto different weights."""
  sums = jax.device_get(_leaf_sums(params))
  h = hashlib.sha256()
  for path, value in jax.tree_util.tree_flatten_with_path(sums)[0]:
    leaf = jax.tree_util.keystr(path)
    h.update(f"{leaf}:{int(value)};".encode())
  shapes = jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), params)
  h.update(repr(jax.tree_util.tree_flatten_with_path(shapes)[0]).encode())
  return h.hexdigest()[:16]


def model_for(cfg, model_def):
  """The trainable model of a run config: `model_def` itself (full fine-tuning, lora.rank 0) or
  a `LoraModel` over it."""
  spec = LoraConfig.of(cfg.lora)
  return model_def if spec is None else LoraModel(model_def, spec)
