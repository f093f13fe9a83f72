"""The decoder against an independent numpy reference, packing isolation, scan == unrolled, and
the KV-cache path == the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax.model import ModelDef, init_cache
from tests.helpers import packed_batch, tiny_cfg


def numpy_reference(params, tokens, positions, segments, m):
  """A from-scratch Llama forward (rotate-half RoPE, GQA, SwiGLU, RMSNorm, tied head)."""
  p = jax.tree.map(np.asarray, params)
  h = m.d_model // m.n_heads
  x = p["embed"][tokens].astype(np.float64)
  T = tokens.shape[1]

  def norm(v, s):
    return v / np.sqrt(np.mean(v * v, -1, keepdims=True) + m.norm_eps) * s

  def rope(v):
    freq = m.rope_theta ** (-np.arange(0, h, 2) / h)
    ang = positions[..., None] * freq
    sin, cos = np.sin(ang)[:, :, None], np.cos(ang)[:, :, None]
    a, b = v[..., : h // 2], v[..., h // 2:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], -1)

  mask = ((segments[:, :, None] == segments[:, None, :]) & (segments[:, :, None] > 0)
          & (np.arange(T)[None, :, None] >= np.arange(T)[None, None, :]))
  for l in range(m.n_layers):
    L = jax.tree.map(lambda a: a[l], p["layers"])
    y = norm(x, L["attn_norm"]["scale"])
    q = rope(np.einsum("btd,dnh->btnh", y, L["attn"]["wq"]))
    k = rope(np.einsum("btd,dkh->btkh", y, L["attn"]["wk"]))
    v = np.einsum("btd,dkh->btkh", y, L["attn"]["wv"])
    rep = m.n_heads // m.n_kv_heads
    k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
    s = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(h)
    s = np.where(mask[:, None], s, -1e30)
    w = np.exp(s - s.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    x = x + np.einsum("bnhs,bsnk,nkd->bhd", w, v, L["attn"]["wo"])
    y = norm(x, L["mlp_norm"]["scale"])
    g, u = y @ L["mlp"]["w_gate"], y @ L["mlp"]["w_up"]
    x = x + (g / (1 + np.exp(-g)) * u) @ L["mlp"]["w_down"]
  x = norm(x, p["final_norm"]["scale"])
  return x @ p["embed"].T


@pytest.fixture(scope="module")
def setup():
  cfg = tiny_cfg()
  md = ModelDef(cfg.model)
  params = md.init(jax.random.PRNGKey(0))
  # Larger weights than the init so that every term visibly matters.
  params = jax.tree.map(lambda a: a * 8 if a.ndim > 2 else a, params)
  batch = packed_batch(np.random.default_rng(0), 4, 16, cfg.model.vocab_size)
  return cfg, md, params, batch


def logits_of(md, params, b):
  return np.asarray(jax.jit(md.apply)(params, b["inputs"], b["positions"], b["segment_ids"])[0])


def test_matches_numpy_reference(setup):
  cfg, md, params, b = setup
  ref = numpy_reference(params, b["inputs"], b["positions"], b["segment_ids"], cfg.model)
  real = b["segment_ids"] > 0
  np.testing.assert_allclose(logits_of(md, params, b)[real], ref[real], rtol=2e-4, atol=2e-4)


def test_packed_documents_do_not_see_each_other(setup):
  cfg, md, params, b = setup
  base = logits_of(md, params, b)
  changed = {k: v.copy() for k, v in b.items()}
  row, seg = 1, 2
  where = changed["segment_ids"][row] == seg
  changed["inputs"][row, where] = (changed["inputs"][row, where] + 7) % cfg.model.vocab_size
  new = logits_of(md, params, changed)
  others = (b["segment_ids"][row] != seg) & (b["segment_ids"][row] > 0)
  np.testing.assert_array_equal(new[row, others], base[row, others])
  assert np.abs(new[row, where] - base[row, where]).max() > 1e-3
  np.testing.assert_array_equal(np.delete(new, row, 0), np.delete(base, row, 0))


def test_document_alone_equals_document_packed_at_an_offset(setup):
  """Positions restart per document, so a document's logits do not depend on where it sits."""
  cfg, md, params, b = setup
  row, seg = 0, 3
  where = np.flatnonzero(b["segment_ids"][row] == seg)
  alone = {k: np.zeros((1, 16), np.int32) for k in b}
  n = len(where)
  for k in ("inputs", "positions"):
    alone[k][0, :n] = b[k][row, where]
  alone["segment_ids"][0, :n] = 1
  np.testing.assert_allclose(logits_of(md, params, alone)[0, :n],
                             logits_of(md, params, b)[row, where], rtol=1e-5, atol=1e-5)


def test_scan_and_unrolled_layers_agree(setup):
  cfg, md, params, b = setup
  cfg2 = tiny_cfg(**{"model.scan_layers": False})
  np.testing.assert_allclose(logits_of(ModelDef(cfg2.model), params, b), logits_of(md, params, b),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "save_dots"])
def test_remat_keeps_gradients(setup, remat):
  cfg, md, params, b = setup
  md2 = ModelDef(tiny_cfg(**{"model.remat": remat}).model)
  loss = lambda m: lambda p: jnp.mean(m.apply(p, b["inputs"], b["positions"], b["segment_ids"])[0] ** 2)
  g1, g2 = jax.grad(loss(md))(params), jax.grad(loss(md2))(params)
  jax.tree.map(lambda a, c: np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-6), g1, g2)


def test_kv_cache_prefill_and_decode_equal_full_forward(setup):
  cfg, md, params, b = setup
  tokens = b["inputs"][:2, :12]
  seg = np.ones_like(tokens)
  pos = np.tile(np.arange(12), (2, 1)).astype(np.int32)
  full, no_cache = md.apply(params, tokens, pos, seg)
  assert no_cache is None  # one return type: (logits, cache or None)
  full = np.asarray(full)
  cache = init_cache(cfg.model, 2, 16, jnp.float32)
  apply = jax.jit(md.apply)
  out, cache = apply(params, tokens[:, :8], pos[:, :8], seg[:, :8], cache, 0)
  steps = [out]
  for t in range(8, 12):
    out, cache = apply(params, tokens[:, t:t + 1], pos[:, t:t + 1], seg[:, t:t + 1], cache, t)
    steps.append(out)
  np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-5, atol=1e-5)
