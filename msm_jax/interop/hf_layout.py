"""The one table between Hugging Face tensor names/layouts and msm-jax parameter paths/layouts.

HF `nn.Linear` weights are [out, in] with heads flattened into one axis; msm-jax keeps [in, out]
with heads split ([D, N, H] for q, [N, H, D] for o) and stacks every layer's tensor on a leading
`layers` axis. Import and export both read this table, so a name or layout exists once.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# layout kinds: how an msm-jax array relates to the HF tensor
SAME = "same"  # identical (embeddings, norm scales)
IN_FIRST = "in_first"  # ours [in, *out] = hf[out_flat, in].T (q/k/v, gate/up/down, lm_head)
OUT_LAST = "out_last"  # ours [*in, out] = hf[out, in_flat].T (o_proj)
FLAT = "flat"  # ours [N, H] = hf[N*H] (q/k/v biases)


@dataclasses.dataclass(frozen=True)
class Entry:
  hf_name: str  # with "{i}" for the layer index when `stacked`
  path: tuple[str, ...]  # into the pure-dict params
  layout: str
  stacked: bool


def entries(model_cfg) -> list[Entry]:
  """Every parameter of the model described by `config.model`, in checkpoint order."""
  m = model_cfg
  out = [Entry("model.embed_tokens.weight", ("embed",), SAME, False)]
  layer = [
      ("input_layernorm.weight", ("attn_norm", "scale"), SAME),
      ("self_attn.q_proj.weight", ("attn", "wq"), IN_FIRST),
      ("self_attn.k_proj.weight", ("attn", "wk"), IN_FIRST),
      ("self_attn.v_proj.weight", ("attn", "wv"), IN_FIRST),
      ("self_attn.o_proj.weight", ("attn", "wo"), OUT_LAST),
      ("post_attention_layernorm.weight", ("mlp_norm", "scale"), SAME),
      ("mlp.gate_proj.weight", ("mlp", "w_gate"), IN_FIRST),
      ("mlp.up_proj.weight", ("mlp", "w_up"), IN_FIRST),
      ("mlp.down_proj.weight", ("mlp", "w_down"), IN_FIRST),
  ]
  if m.qkv_bias:
    layer += [(f"self_attn.{p}_proj.bias", ("attn", f"b{p}"), FLAT) for p in "qkv"]
  if m.qk_norm:
    layer += [(f"self_attn.{p}_norm.weight", ("attn", f"{p}_norm", "scale"), SAME) for p in "qk"]
  out += [Entry(f"model.layers.{{i}}.{name}", ("layers", *path), layout, True)
          for name, path, layout in layer]
  out.append(Entry("model.norm.weight", ("final_norm", "scale"), SAME, False))
  if not m.tie_embeddings:
    out.append(Entry("lm_head.weight", ("lm_head",), IN_FIRST, False))
  return out


def to_ours(hf_array: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
  """One HF tensor (one layer's, for stacked params) -> msm-jax layout of `shape`.

  Returns a view (reshape + axis move, no copy): whoever places it copies one shard at a time.
  """
  shape = tuple(shape)
  if layout == IN_FIRST or layout == OUT_LAST:
    hf_shape = (int(np.prod(shape[1:])), shape[0]) if layout == IN_FIRST else (
        shape[-1], int(np.prod(shape[:-1])))
    if hf_array.shape != hf_shape:
      raise ValueError(f"shape {hf_array.shape}, expected {hf_shape}")
    if layout == IN_FIRST:
      return np.moveaxis(hf_array.reshape(*shape[1:], shape[0]), -1, 0)
    return np.moveaxis(hf_array.reshape(shape[-1], *shape[:-1]), 0, -1)
  if hf_array.size != int(np.prod(shape)) or (layout == SAME and hf_array.shape != shape):
    raise ValueError(f"shape {hf_array.shape}, expected {shape}")
  return hf_array.reshape(shape)


def to_hf(array: np.ndarray, layout: str) -> np.ndarray:
  """One msm-jax array (one layer's slice, for stacked params) -> the HF tensor."""
  if layout == IN_FIRST:
    return np.ascontiguousarray(array.reshape(array.shape[0], -1).T)
  if layout == OUT_LAST:
    return np.ascontiguousarray(array.reshape(-1, array.shape[-1]).T)
  if layout == FLAT:
    return array.reshape(-1)
  return array


def get_path(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value
