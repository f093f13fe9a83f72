"""A Llama-family decoder in Flax NNX.

Shapes in names: B batch, T query length, S key length, D d_model, N query heads, K kv heads,
H head dim, F mlp dim, V vocab, L layers. Parameters are f32 masters (`param_dtype`) cast to
`compute_dtype` for the matmuls; logits and softmax are f32. Each parameter carries its logical
axes as `axes` metadata (see `sharding.py`).

Layer parameters are always stacked along a leading `layers` axis, so the checkpoint layout does
not depend on how the layers run: `scan_layers=True` scans one compiled block over the stack,
`False` unrolls a Python loop over slices of it. Packed rows are handled by explicit per-token
`positions` (rotary phases restart per document) and `segment_ids` (attention stays inside a
document; 0 is padding). The same mask serves the KV-cache decode path used by the eval harness.
Attention itself goes through `attention.attend`, which picks the kernel (`model.attention_impl`).
Imported families are config switches, off by default: `qkv_bias` (Qwen2), `qk_norm` (Qwen3),
`rope_scaling="llama3"` (Llama-3.1; see `rope_inv_freq`), `head_dim` != d_model / n_heads.
"""

from __future__ import annotations

import functools

import flax
import jax
import jax.numpy as jnp
from flax import nnx

from msm_jax.attention import Mask, attend
from msm_jax.model_config import ModelConfig
from msm_jax.sharding import constrain

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@jax.custom_vjp
def materialize_grad(x):
  """Identity whose backward makes XLA compute the incoming gradient once and store it.

  On CPU, XLA otherwise re-fuses the elementwise gradient chain along the residual stream into
  every transposed weight-gradient operand, recomputing it per consumer (see benchmarks/).
  """
  return x


def _materialize_fwd(x):
  return x, None


def _materialize_bwd(_, g):
  # g / 1 elementwise, exactly the identity. XLA's CPU fusion treats a float divide as expensive
  # and will not duplicate it into several consumers (e.g. the transposed operand of a
  # weight-gradient matmul and the input-gradient matmul), so the gradient chain ending here is
  # computed once and stored. The divisor must be a full tensor XLA cannot fold: a divide by a
  # constant or a broadcast scalar is rewritten to a (cheap, re-fused) multiply, and
  # reduce_precision / optimization_barrier are either cheap to XLA or removed. (sign bit | 1)
  # is 1 for every element, read from g's own bits. benchmarks/README.md has the measurements.
  uint = {2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint64}[jnp.dtype(g.dtype).itemsize]
  bits = jax.lax.bitcast_convert_type(g, uint)
  one = ((bits >> (8 * jnp.dtype(g.dtype).itemsize - 1)) | uint(1)).astype(g.dtype)
  return (g / one,)


materialize_grad.defvjp(_materialize_fwd, _materialize_bwd)


def _param(rngs, shape, axes, std, dtype):
  return nnx.Param(jax.random.normal(rngs.params(), shape, dtype) * std, axes=axes)


class RMSNorm(nnx.Module):

  def __init__(self, dim, eps, dtype, axis_name="embed"):
    self.scale = nnx.Param(jnp.ones((dim,), dtype), axes=(axis_name,))
    self.eps = eps

  def __call__(self, x_BxTxD):
    x = x_BxTxD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps)
    return (x * self.scale[...].astype(jnp.float32)).astype(x_BxTxD.dtype)


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
  """Rotary inverse frequencies [H/2], the one place they are computed.

  `rope_scaling="llama3"` applies Llama-3.1's smooth long-context scaling exactly as
  `transformers`' `ROPE_INIT_FUNCTIONS["llama3"]` does: wavelengths beyond the original context
  / low_freq_factor are divided by `rope_factor`, those below / high_freq_factor are kept, and
  the band between interpolates.
  """
  h = cfg.head_dim
  freq_H2 = cfg.rope_theta ** (-jnp.arange(0, h, 2, dtype=jnp.float32) / h)
  if cfg.rope_scaling == "llama3":
    factor, low, high = cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    context = cfg.rope_original_context
    wavelen_H2 = 2 * jnp.pi / freq_H2
    scaled_H2 = jnp.where(wavelen_H2 > context / low, freq_H2 / factor, freq_H2)
    smooth_H2 = (context / wavelen_H2 - low) / (high - low)
    smoothed_H2 = (1 - smooth_H2) * scaled_H2 / factor + smooth_H2 * scaled_H2
    medium_H2 = (wavelen_H2 >= context / high) & (wavelen_H2 <= context / low)
    freq_H2 = jnp.where(medium_H2, smoothed_H2, scaled_H2)
  return freq_H2


def rotary(x_BxTxNxH, positions_BxT, freq_H2):
  """Rotate-half rotary embedding (the Llama / HF convention) at explicit positions."""
  angle_BxTxH2 = positions_BxT[..., None].astype(jnp.float32) * freq_H2
  sin, cos = jnp.sin(angle_BxTxH2)[:, :, None], jnp.cos(angle_BxTxH2)[:, :, None]
  x1, x2 = jnp.split(x_BxTxNxH.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxNxH.dtype)


class Attention(nnx.Module):

  def __init__(self, cfg, rngs):
    d, n, k, h = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    pdt, std = DTYPES[cfg.param_dtype], cfg.init_std
    self.wq = _param(rngs, (d, n, h), ("embed", "heads", "head_dim"), std, pdt)
    self.wk = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), std, pdt)
    self.wv = _param(rngs, (d, k, h), ("embed", "kv_heads", "head_dim"), std, pdt)
    self.wo = _param(rngs, (n, h, d), ("heads", "head_dim", "embed"), std / (2 * cfg.n_layers) ** 0.5, pdt)
    if cfg.qkv_bias:  # Qwen2 / Qwen2.5
      self.bq = nnx.Param(jnp.zeros((n, h), pdt), axes=("heads", "head_dim"))
      self.bk = nnx.Param(jnp.zeros((k, h), pdt), axes=("kv_heads", "head_dim"))
      self.bv = nnx.Param(jnp.zeros((k, h), pdt), axes=("kv_heads", "head_dim"))
    if cfg.qk_norm:  # Qwen3: RMSNorm over each head's features, before rotary
      self.q_norm = RMSNorm(h, cfg.norm_eps, pdt, "head_dim")
      self.k_norm = RMSNorm(h, cfg.norm_eps, pdt, "head_dim")
    self.cfg = cfg

  def __call__(self, x_BxTxD, positions_BxT, mask: Mask, cache=None, cache_index=None):
    cdt = DTYPES[self.cfg.compute_dtype]
    q_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, self.wq[...].astype(cdt))
    k_BxTxKxH = jnp.einsum("btd,dkh->btkh", x_BxTxD, self.wk[...].astype(cdt))
    v_BxTxKxH = jnp.einsum("btd,dkh->btkh", x_BxTxD, self.wv[...].astype(cdt))
    if self.cfg.qkv_bias:
      q_BxTxNxH = q_BxTxNxH + self.bq[...].astype(cdt)
      k_BxTxKxH = k_BxTxKxH + self.bk[...].astype(cdt)
      v_BxTxKxH = v_BxTxKxH + self.bv[...].astype(cdt)
    if self.cfg.qk_norm:
      q_BxTxNxH, k_BxTxKxH = self.q_norm(q_BxTxNxH), self.k_norm(k_BxTxKxH)
    freq_H2 = rope_inv_freq(self.cfg)
    q_BxTxNxH = rotary(q_BxTxNxH, positions_BxT, freq_H2)
    k_BxTxKxH = rotary(k_BxTxKxH, positions_BxT, freq_H2)
    if cache is not None:  # decode: write the new keys/values at cache_index, attend to all
      k_BxSxKxH = jax.lax.dynamic_update_slice_in_dim(cache.k, k_BxTxKxH.astype(cache.k.dtype), cache_index, 1)
      v_BxSxKxH = jax.lax.dynamic_update_slice_in_dim(cache.v, v_BxTxKxH.astype(cache.v.dtype), cache_index, 1)
      cache = LayerKV(k=k_BxSxKxH, v=v_BxSxKxH)
    else:
      k_BxSxKxH, v_BxSxKxH = k_BxTxKxH, v_BxTxKxH
    out_BxTxNxH = attend(q_BxTxNxH, k_BxSxKxH.astype(cdt), v_BxSxKxH.astype(cdt), mask,
                         impl=self.cfg.attention_impl, decode=cache is not None)
    out_BxTxNxH = constrain(out_BxTxNxH, ("batch", "length", "act_heads", None))
    out_BxTxD = jnp.einsum("btnh,nhd->btd", out_BxTxNxH, self.wo[...].astype(cdt))
    return out_BxTxD, cache


class MLP(nnx.Module):

  def __init__(self, cfg, rngs):
    d, f, pdt, std = cfg.d_model, cfg.mlp_dim, DTYPES[cfg.param_dtype], cfg.init_std
    self.w_gate = _param(rngs, (d, f), ("embed", "mlp"), std, pdt)
    self.w_up = _param(rngs, (d, f), ("embed", "mlp"), std, pdt)
    self.w_down = _param(rngs, (f, d), ("mlp", "embed"), std / (2 * cfg.n_layers) ** 0.5, pdt)
    self.cfg = cfg

  def __call__(self, x_BxTxD):
    cdt = DTYPES[self.cfg.compute_dtype]
    gate_BxTxF = x_BxTxD @ self.w_gate[...].astype(cdt)
    up_BxTxF = x_BxTxD @ self.w_up[...].astype(cdt)
    if self.cfg.materialize_grads:
      gate_BxTxF, up_BxTxF = materialize_grad(gate_BxTxF), materialize_grad(up_BxTxF)
    h_BxTxF = constrain(jax.nn.silu(gate_BxTxF) * up_BxTxF, ("batch", "length", "act_mlp"))
    return h_BxTxF @ self.w_down[...].astype(cdt)


class Block(nnx.Module):

  def __init__(self, cfg, rngs):
    pdt = DTYPES[cfg.param_dtype]
    self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pdt)
    self.attn = Attention(cfg, rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pdt)
    self.mlp = MLP(cfg, rngs)
    self.materialize = cfg.materialize_grads

  def __call__(self, x_BxTxD, positions_BxT, mask: Mask, cache=None, cache_index=None):
    res = materialize_grad if self.materialize else (lambda x: x)
    attn_BxTxD, cache = self.attn(self.attn_norm(x_BxTxD), positions_BxT, mask, cache, cache_index)
    x_BxTxD = res(x_BxTxD + attn_BxTxD)
    x_BxTxD = res(x_BxTxD + self.mlp(self.mlp_norm(x_BxTxD)))
    return constrain(x_BxTxD, ("batch", "length", "act_embed")), cache


REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


@flax.struct.dataclass
class LayerKV:
  """One layer's keys and values (or, stacked, every layer's: a leading [L] axis)."""
  k: jax.Array  # [B, S, K, H]
  v: jax.Array


@flax.struct.dataclass
class KVCache:
  """The decode cache: keys/values [L, B, S, K, H] and the segment id of each slot [B, S]."""
  k: jax.Array
  v: jax.Array
  segment_ids: jax.Array  # 0 = empty slot


class Decoder(nnx.Module):
  """Token ids -> (f32 logits, the updated KV cache when one was passed, else None)."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    cfg = ModelConfig.of(cfg)
    pdt = DTYPES[cfg.param_dtype]
    self.cfg = cfg
    self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.init_std, pdt)

    @nnx.split_rngs(splits=cfg.n_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    def make_layers(rngs):
      return Block(cfg, rngs)

    self.layers = make_layers(rngs)
    self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, pdt)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.d_model, cfg.vocab_size), ("embed", "vocab"), cfg.init_std, pdt)

  def __call__(self, tokens_BxT, positions_BxT, segment_ids_BxT, cache: KVCache | None = None,
               cache_index=None) -> tuple[jax.Array, KVCache | None]:
    cfg, cdt = self.cfg, DTYPES[self.cfg.compute_dtype]
    # Gather from a replicated table (FSDP all-gathers every weight for use anyway): SPMD has no
    # efficient gather from a sharded table into a batch-sharded result.
    table_VxD = constrain(self.embed[...], (None, None))
    x_BxTxD = jnp.take(table_VxD, tokens_BxT, axis=0).astype(cdt)
    x_BxTxD = constrain(x_BxTxD, ("batch", "length", "act_embed"))
    t = tokens_BxT.shape[1]
    if cache is None:
      slots_T = jnp.arange(t)
      mask = Mask(segment_ids_BxT, segment_ids_BxT, jnp.broadcast_to(slots_T, tokens_BxT.shape), slots_T)
      layer_cache = None
    else:
      k_seg_BxS = jax.lax.dynamic_update_slice_in_dim(cache.segment_ids, segment_ids_BxT, cache_index, 1)
      q_slot_BxT = jnp.broadcast_to(cache_index + jnp.arange(t), tokens_BxT.shape)
      mask = Mask(segment_ids_BxT, k_seg_BxS, q_slot_BxT, jnp.arange(k_seg_BxS.shape[1]))
      layer_cache = LayerKV(k=cache.k, v=cache.v)

    graphdef, stacked = nnx.split(self.layers)

    def block(x_BxTxD, layer_params, layer_kv):
      return nnx.merge(graphdef, layer_params)(x_BxTxD, positions_BxT, mask, layer_kv, cache_index)

    if cfg.remat != "none":
      block = jax.checkpoint(block, policy=REMAT_POLICIES[cfg.remat])
    if cfg.scan_layers:
      x_BxTxD, new_kv = jax.lax.scan(lambda x, xs: block(x, *xs), x_BxTxD, (stacked, layer_cache))
    else:
      outs = []
      for i in range(cfg.n_layers):
        take = functools.partial(jax.tree.map, lambda a: a[i])
        x_BxTxD, kv = block(x_BxTxD, take(stacked), None if layer_cache is None else take(layer_cache))
        outs.append(kv)
      new_kv = None if layer_cache is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)

    x_BxTxD = self.final_norm(x_BxTxD)
    head_DxV = self.embed[...].T if cfg.tie_embeddings else self.lm_head[...]
    logits_BxTxV = jnp.einsum("btd,dv->btv", x_BxTxD, head_DxV.astype(cdt),
                              preferred_element_type=jnp.float32)
    logits_BxTxV = constrain(logits_BxTxV, ("batch", "length", "act_vocab"))
    if cache is None:
      return logits_BxTxV, None
    return logits_BxTxV, KVCache(k=new_kv.k, v=new_kv.v, segment_ids=k_seg_BxS)


def init_cache(cfg, batch: int, length: int, dtype=None) -> KVCache:
  """An empty KV cache: k/v [L, B, S, K, H], segment ids [B, S] (0 = empty slot)."""
  cfg = ModelConfig.of(cfg)
  dtype = dtype or DTYPES[cfg.compute_dtype]
  shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
  return KVCache(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
                 segment_ids=jnp.zeros((batch, length), jnp.int32))


def param_axes(abstract_state) -> dict:
  """Logical axes of every parameter (pure dict), with `layers` prepended for stacked ones."""
  def axes(path, var):
    names = tuple(var.get_metadata()["axes"])
    if len(names) < var.get_value().ndim:
      names = ("layers",) + names
    return names
  tree = jax.tree.map_with_path(axes, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.to_pure_dict(tree)


class ModelDef:
  """The model's structure without its weights: apply pure-dict params to a batch."""

  def __init__(self, cfg: ModelConfig):
    self.cfg = cfg = ModelConfig.of(cfg)
    abstract = nnx.eval_shape(lambda: Decoder(cfg, nnx.Rngs(0)))
    self.graphdef, self.abstract_state = nnx.split(abstract)
    self.axes = param_axes(self.abstract_state)

  def init(self, key) -> dict:
    return nnx.to_pure_dict(nnx.state(Decoder(self.cfg, nnx.Rngs(params=key))))

  def bind(self, params: dict) -> Decoder:
    state = jax.tree.map(lambda x: x, self.abstract_state)
    nnx.replace_by_pure_dict(state, params)
    return nnx.merge(self.graphdef, state)

  def apply(self, params, tokens_BxT, positions_BxT, segment_ids_BxT, cache=None, cache_index=None):
    """-> (logits [B, T, V] f32, the updated cache or None)."""
    return self.bind(params)(tokens_BxT, positions_BxT, segment_ids_BxT, cache, cache_index)

  def pure_abstract(self) -> dict:
    """Parameter shapes and dtypes as a pure dict (ShapeDtypeStructs)."""
    return nnx.to_pure_dict(self.abstract_state)

  def param_count(self) -> int:
    return sum(x.size for x in jax.tree.leaves(self.pure_abstract()))
