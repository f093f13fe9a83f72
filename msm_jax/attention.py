"""The one attention seam: every attention call goes through `attend`, which picks the kernel.

The model never builds a dense mask itself: it hands over a `Mask` (segment ids and slots of the
queries and keys), and each kernel applies it its own way. Kernels, by `model.attention_impl`:

- `xla`: the reference, `jax.nn.dot_product_attention` with the dense boolean mask (causal by
  slot AND same segment AND not padding). Runs everywhere; every other choice falls back to it.
- `splash`: Pallas splash attention (TPU), with `SegmentIds` and a causal mask, GQA native. Off
  TPU it runs the Pallas interpreter (correct but slow: for tests). Needs query and key lengths
  that are multiples of 128; other calls (and every KV-cache decode call) take the reference.
- `cudnn`: cuDNN flash attention (CUDA GPUs) through `jax.nn.dot_product_attention`. It has no
  segment ids, only a causal mask and a per-row length, so it is correct only for rows that hold
  one document followed by padding. Packing is a property of the data, not of the shapes, so the
  choice is made at run time: `lax.cond` on `one_document_rows` sends any batch with a packed row
  (or leading padding) to the reference. A packed batch never reaches cuDNN. Both branches are
  compiled into the step, so peak memory may stay the reference's; the gain is speed.
- `auto` (default): splash on TPU, cuDNN (guarded as above) on a CUDA GPU for bf16/fp16 with
  head_dim a multiple of 8 and at most 128, the reference on CPU and everywhere else.

Real tokens get the same result from every kernel (to float tolerance). Padding queries (segment
0) attend nothing in the reference and are zeroed after cuDNN; splash lets padding attend earlier
padding. Their outputs never reach a real token and carry zero loss weight.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu import splash_attention as splash

from msm_jax.sharding import active_mesh, batch_shards, logical_to_spec

IMPLS = ("auto", "xla", "splash", "cudnn")
SPLASH_BLOCKS = (512, 256, 128)  # the largest that divides both lengths is used


class Mask(NamedTuple):
  """Who may attend to whom: causal by slot AND same segment AND query not padding (segment 0).

  Slots are positions in the row (training, prefill) or in the KV cache (decode); `positions`
  (the rotary phases) restart per document and are not used here.
  """
  q_segment_ids_BxT: jax.Array
  kv_segment_ids_BxS: jax.Array
  q_slots_BxT: jax.Array
  kv_slots_S: jax.Array

  def dense(self):
    """The boolean mask [B, 1, T, S] for the reference kernel."""
    same = self.q_segment_ids_BxT[:, :, None] == self.kv_segment_ids_BxS[:, None, :]
    real = (self.q_segment_ids_BxT != 0)[:, :, None]
    causal = self.kv_slots_S[None, None, :] <= self.q_slots_BxT[:, :, None]
    return (same & real & causal)[:, None]


def _is_cuda() -> bool:
  try:
    return "cuda" in jax.devices()[0].client.platform_version.lower()
  except (AttributeError, IndexError, RuntimeError):
    return False


def choose(impl: str, *, backend: str, decode: bool, q_len: int, kv_len: int, head_dim: int,
           dtype, cuda: bool = True) -> str:
  """The kernel ('reference' | 'splash' | 'cudnn') for one call, decided from static facts.

  'cudnn' always means the run-time guarded cuDNN call (see `one_document_rows`).
  """
  if impl not in IMPLS:
    raise ValueError(f"config.model.attention_impl: one of {IMPLS}, got {impl!r}")
  if impl == "cudnn" and not (backend == "gpu" and cuda):
    raise ValueError(f"config.model.attention_impl: 'cudnn' needs a CUDA GPU, this backend is "
                     f"{backend!r} (use 'auto' or 'xla')")
  fused_shape = not decode and q_len == kv_len
  splash_ok = fused_shape and q_len % SPLASH_BLOCKS[-1] == 0
  if impl == "splash":
    return "splash" if splash_ok else "reference"
  if impl == "cudnn":
    return "cudnn" if fused_shape else "reference"
  if impl == "auto":
    if backend == "tpu" and splash_ok:
      return "splash"
    if (backend == "gpu" and cuda and fused_shape and head_dim % 8 == 0 and head_dim <= 128
        and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))):
      return "cudnn"
  return "reference"


def one_document_rows(segment_ids_BxT):
  """True when every row is one document then only padding ([s, .., s, 0, .., 0], s > 0).

  Those are exactly the rows a causal mask plus a per-row length describes (what cuDNN can do).
  """
  first_real = jnp.all(segment_ids_BxT[:, 0] != 0)
  same_or_pad = (segment_ids_BxT[:, 1:] == segment_ids_BxT[:, :-1]) | (segment_ids_BxT[:, 1:] == 0)
  return first_real & jnp.all(same_or_pad)


def reference(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask: Mask):
  return jax.nn.dot_product_attention(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask=mask.dense(),
                                      implementation="xla")


def guarded_cudnn(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask: Mask, implementation="cudnn"):
  """cuDNN flash attention when every row is one document, else the reference (run-time).

  The flash call is causal with per-row lengths; padding queries are zeroed. `implementation`
  is jax's: 'xla' runs the same call (same causal-plus-lengths semantics) where cuDNN is absent.
  """
  seg_BxT = mask.q_segment_ids_BxT

  def flash(q, k, v):
    lengths_B = jnp.sum(seg_BxT != 0, axis=1).astype(jnp.int32)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=True, query_seq_lengths=lengths_B,
                                       key_value_seq_lengths=lengths_B,
                                       implementation=implementation)
    return jnp.where((seg_BxT != 0)[:, :, None, None], out, jnp.zeros((), out.dtype))

  ok = one_document_rows(seg_BxT) & jnp.all(seg_BxT == mask.kv_segment_ids_BxS)
  return jax.lax.cond(ok, flash, lambda q, k, v: reference(q, k, v, mask),
                      q_BxTxNxH, k_BxSxKxH, v_BxSxKxH)


def _splash_local(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, seg_BxT, *, interpret):
  """Splash on one device's shard: vmapped over rows, heads-major inside the kernel."""
  t, n, h = q_BxTxNxH.shape[1:]
  s = k_BxSxKxH.shape[1]
  block = next(b for b in SPLASH_BLOCKS if t % b == 0 and s % b == 0)
  sizes = splash.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                            block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                            block_q_dq=block, block_kv_dq=block)
  kernel = splash.make_splash_mha(splash.MultiHeadMask([splash.CausalMask((t, s))] * n),
                                  block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                  interpret=interpret)
  q_BxNxTxH = jnp.swapaxes(q_BxTxNxH * jnp.asarray(h ** -0.5, q_BxTxNxH.dtype), 1, 2)
  k_BxKxSxH, v_BxKxSxH = jnp.swapaxes(k_BxSxKxH, 1, 2), jnp.swapaxes(v_BxSxKxH, 1, 2)

  def row(q, k, v, seg):
    return kernel(q, k, v, segment_ids=splash.SegmentIds(q=seg, kv=seg))

  return jnp.swapaxes(jax.vmap(row)(q_BxNxTxH, k_BxKxSxH, v_BxKxSxH, seg_BxT), 1, 2)


def _splash(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask: Mask, *, interpret):
  """Splash over the active mesh (a Pallas call is not partitioned by XLA: shard_map it)."""
  local = functools.partial(_splash_local, interpret=interpret)
  seg_BxT = mask.q_segment_ids_BxT
  mesh = active_mesh()
  if mesh is None:
    return local(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, seg_BxT)
  if q_BxTxNxH.shape[0] % batch_shards(mesh) or k_BxSxKxH.shape[2] % mesh.shape["tensor"]:
    return reference(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask)  # e.g. a small eval batch
  heads = logical_to_spec(("batch", "length", "act_heads", None))
  rows = logical_to_spec(("batch", "length"))
  return jax.shard_map(local, mesh=mesh, in_specs=(heads, heads, heads, rows), out_specs=heads,
                       check_vma=False)(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, seg_BxT)


def attend(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask: Mask, *, impl: str = "auto",
           decode: bool = False):
  """Softmax attention [B, T, N, H] under `mask`; GQA when K < N (query head n uses n // (N/K)).

  `decode`: the keys are a KV cache (slots are cache positions), which only the reference takes.
  """
  kernel = choose(impl, backend=jax.default_backend(), decode=decode, q_len=q_BxTxNxH.shape[1],
                  kv_len=k_BxSxKxH.shape[1], head_dim=q_BxTxNxH.shape[-1],
                  dtype=q_BxTxNxH.dtype, cuda=_is_cuda())
  if kernel == "splash":
    return _splash(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask,
                   interpret=jax.default_backend() != "tpu")
  if kernel == "cudnn":
    return guarded_cudnn(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask)
  return reference(q_BxTxNxH, k_BxSxKxH, v_BxSxKxH, mask)
