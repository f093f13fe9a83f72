"""The attention seam: splash (Pallas interpreter on CPU) against the reference; the dispatch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from msm_jax import attention
from msm_jax.attention import Mask, attend, choose, one_document_rows
from msm_jax.config import ConfigError, validate
from msm_jax.model import ModelDef
from msm_jax.sharding import activate, make_mesh
from tests.helpers import packed_batch, tiny_cfg
from tests.test_train_step import run_steps

B, T, N, K, H = 2, 256, 4, 2, 16  # GQA: two query heads per kv head


def _segments():
  """Row 0: two documents then padding; row 1: three documents filling the row."""
  seg = np.zeros((B, T), np.int32)
  seg[0, :100], seg[0, 100:190] = 1, 2
  seg[1, :40], seg[1, 40:140], seg[1, 140:] = 1, 2, 3
  return jnp.asarray(seg)


def _inputs(dtype=jnp.float32):
  kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
  return (jax.random.normal(kq, (B, T, N, H), dtype), jax.random.normal(kk, (B, T, K, H), dtype),
          jax.random.normal(kv, (B, T, K, H), dtype))


def _train_mask(seg_BxT):
  slots_T = jnp.arange(seg_BxT.shape[1])
  return Mask(seg_BxT, seg_BxT, jnp.broadcast_to(slots_T, seg_BxT.shape), slots_T)


def _naive(q, k, v, seg):
  """Independent numpy attention: per row, per head, softmax over earlier keys of the segment."""
  q, k, v, seg = (np.asarray(a, np.float64) for a in (q, k, v, seg))
  out = np.zeros(q.shape)
  for b in range(q.shape[0]):
    for n in range(q.shape[2]):
      kvh = n // (q.shape[2] // k.shape[2])
      for t in range(q.shape[1]):
        if seg[b, t] == 0:
          continue
        keys = [s for s in range(t + 1) if seg[b, s] == seg[b, t]]
        logits = k[b, keys, kvh] @ q[b, t, n] / np.sqrt(q.shape[-1])
        w = np.exp(logits - logits.max())
        out[b, t, n] = (w / w.sum()) @ v[b, keys, kvh]
  return out


def test_reference_matches_naive_attention_on_real_tokens():
  q, k, v = _inputs()
  seg = _segments()[:, :64]
  q, k, v = q[:, :64], k[:, :64], v[:, :64]
  out = attend(q, k, v, _train_mask(seg), impl="xla")
  real = np.asarray(seg) != 0
  np.testing.assert_allclose(np.asarray(out)[real], _naive(q, k, v, seg)[real], rtol=1e-5,
                             atol=1e-5)


def test_auto_on_cpu_is_the_reference_bit_for_bit():
  q, k, v = _inputs()
  mask = _train_mask(_segments())
  assert choose("auto", backend=jax.default_backend(), decode=False, q_len=T, kv_len=T,
                head_dim=H, dtype=jnp.float32, cuda=False) == "reference"
  want = jax.nn.dot_product_attention(q, k, v, mask=mask.dense())
  np.testing.assert_array_equal(attend(q, k, v, mask, impl="auto"), want)


def _loss(impl, seg):
  real = (seg != 0)[:, :, None, None]

  def f(q, k, v):
    out = attend(q, k, v, _train_mask(seg), impl=impl)
    return jnp.sum(jnp.where(real, out * jnp.cos(out), 0.0))
  return f


def test_splash_matches_reference_under_packing_padding_and_gqa():
  q, k, v = _inputs()
  seg = _segments()
  real = np.asarray(seg) != 0
  want = attend(q, k, v, _train_mask(seg), impl="xla")
  got = jax.jit(lambda q, k, v: attend(q, k, v, _train_mask(seg), impl="splash"))(q, k, v)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-5, atol=1e-5)
  # gradients too (the splash backward kernels), with the loss on real tokens only
  g_want = jax.grad(_loss("xla", seg), argnums=(0, 1, 2))(q, k, v)
  g_got = jax.jit(jax.grad(_loss("splash", seg), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(g_got, g_want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_splash_under_a_mesh_is_shard_mapped_and_matches():
  q, k, v = _inputs()
  seg = _segments()
  cfg = tiny_cfg(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  mesh = make_mesh(cfg)
  with activate(mesh):
    got = jax.jit(lambda q, k, v: attend(q, k, v, _train_mask(seg), impl="splash"))(q, k, v)
  # batch 2 cannot split over data*fsdp = 4: the same call falls back to the reference there
  real = np.asarray(seg) != 0
  want = attend(q, k, v, _train_mask(seg), impl="xla")
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-5, atol=1e-5)
  q4, k4, v4, seg4 = (jnp.concatenate([a, a[::-1]]) for a in (q, k, v, seg))
  with activate(mesh):
    fn = jax.jit(lambda q, k, v: attend(q, k, v, _train_mask(seg4), impl="splash"))
    assert "shard_map" in str(jax.make_jaxpr(fn)(q4, k4, v4))
    got4 = fn(q4, k4, v4)
  real4 = np.asarray(seg4) != 0
  want4 = attend(q4, k4, v4, _train_mask(seg4), impl="xla")
  np.testing.assert_allclose(np.asarray(got4)[real4], np.asarray(want4)[real4], rtol=1e-5,
                             atol=1e-5)


def test_model_logits_with_splash_match_the_reference():
  rng = np.random.default_rng(0)
  cfg = tiny_cfg()
  batch = packed_batch(rng, 2, 128, cfg.model.vocab_size)
  md = ModelDef(cfg.model)
  params = md.init(jax.random.PRNGKey(1))
  cfg.model.attention_impl = "splash"
  md_splash = ModelDef(cfg.model)
  args = (batch["inputs"], batch["positions"], batch["segment_ids"])
  want, _ = md.apply(params, *args)
  got, _ = jax.jit(md_splash.apply)(params, *args)
  real = batch["segment_ids"] != 0
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend,dtype,q_len,decode,want", [
    ("cpu", jnp.bfloat16, 256, False, "reference"),
    ("tpu", jnp.bfloat16, 256, False, "splash"),
    ("tpu", jnp.bfloat16, 200, False, "reference"),  # not a multiple of 128
    ("tpu", jnp.bfloat16, 256, True, "reference"),  # KV-cache decode
    ("gpu", jnp.bfloat16, 256, False, "cudnn"),  # run-time guarded, see below
    ("gpu", jnp.float32, 256, False, "reference"),  # cuDNN flash wants bf16/fp16
    ("gpu", jnp.bfloat16, 256, True, "reference"),
])
def test_auto_choice_by_backend(backend, dtype, q_len, decode, want):
  got = choose("auto", backend=backend, decode=decode, q_len=q_len, kv_len=q_len, head_dim=64,
               dtype=dtype, cuda=True)
  assert got == want


def test_explicit_choices():
  kw = dict(q_len=256, kv_len=256, head_dim=64, dtype=jnp.bfloat16)
  assert choose("xla", backend="tpu", decode=False, **kw) == "reference"
  assert choose("splash", backend="cpu", decode=False, **kw) == "splash"  # interpreter
  assert choose("splash", backend="tpu", decode=True, **kw) == "reference"
  assert choose("cudnn", backend="gpu", decode=True, **kw) == "reference"
  with pytest.raises(ValueError, match="config.model.attention_impl: 'cudnn' needs a CUDA GPU"):
    choose("cudnn", backend="cpu", decode=False, **kw)
  with pytest.raises(ValueError, match="config.model.attention_impl: 'cudnn' needs a CUDA GPU"):
    choose("cudnn", backend="gpu", decode=False, cuda=False, **kw)  # ROCm
  with pytest.raises(ValueError, match="config.model.attention_impl"):
    choose("flash", backend="gpu", decode=False, **kw)
  q, k, v = _inputs()
  with pytest.raises(ValueError, match="needs a CUDA GPU"):
    attend(q, k, v, _train_mask(_segments()), impl="cudnn")


def _one_document(row):
  """Independent definition: a non-empty first document, then only padding."""
  n = next((i for i, s in enumerate(row) if s == 0), len(row))
  return n > 0 and len(set(row[:n])) == 1 and all(s == 0 for s in row[n:])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 3), min_size=6, max_size=6), min_size=1, max_size=3))
def test_cudnn_guard_sends_every_packed_batch_to_the_reference(rows):
  """cuDNN (no segment ids) is taken only when every row is one document then padding."""
  seg = np.asarray(rows, np.int32)
  assert bool(one_document_rows(jnp.asarray(seg))) == all(_one_document(list(r)) for r in rows)


def test_cudnn_guard_on_the_training_batches():
  rng = np.random.default_rng(0)
  packed = packed_batch(rng, 4, 64, 32)["segment_ids"]
  assert not one_document_rows(jnp.asarray(packed))
  single = packed_batch(rng, 4, 64, 32, docs_per_row=1)["segment_ids"]
  assert one_document_rows(jnp.asarray(single))
  assert not one_document_rows(jnp.asarray(np.concatenate([single, packed[:1]])))


def test_config_validates_attention_impl():
  cfg = tiny_cfg(**{"model.attention_impl": "flash"})
  with pytest.raises(ConfigError, match="config.model.attention_impl"):
    validate(cfg, 8)
  cfg = tiny_cfg(**{"model.attention_impl": "splash"})  # seq_len 16
  with pytest.raises(ConfigError, match="config.seq_len"):
    validate(cfg, 8)
  validate(tiny_cfg(**{"model.attention_impl": "splash", "seq_len": 128}), 8)
  assert attention.IMPLS == ("auto", "xla", "splash", "cudnn")


def test_guarded_cudnn_call_routes_packed_rows_to_the_reference():
  """The guarded call, run with jax's xla implementation of the same flash call (no GPU here).

  Which branch ran shows at the padding queries: the flash branch zeroes them, the reference
  leaves its (finite, unused) average there.
  """
  q, k, v = _inputs()
  single = np.zeros((B, T), np.int32)
  single[0, :180], single[1, :] = 1, 5
  for seg, flash_taken in ((jnp.asarray(single), True), (_segments(), False)):
    mask = _train_mask(seg)
    got = np.asarray(attention.guarded_cudnn(q, k, v, mask, implementation="xla"))
    want = np.asarray(attend(q, k, v, mask, impl="xla"))
    real = np.asarray(seg) != 0
    np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-5)
    if flash_taken:
      assert np.all(got[~real] == 0)
    else:
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # padding rows included
      assert np.all(np.abs(got[~real]).max(axis=-1) > 0)


@pytest.mark.slow  # two sharded train-step compiles: ~45 s idle, ~110 s on the loaded 2 cores
def test_sharded_train_step_with_splash_matches_the_reference():
  """The whole step (scan, full remat, AdamW) over data x fsdp x tensor = 2 x 2 x 2 devices."""
  batches = [packed_batch(np.random.default_rng(0), 8, 128, 64)]
  base = {"seq_len": 128, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "model.remat": "full"}
  lx, px, _ = run_steps(tiny_cfg(**base, **{"model.attention_impl": "xla"}), jax.devices(), batches)
  ls, ps, _ = run_steps(tiny_cfg(**base, **{"model.attention_impl": "splash"}), jax.devices(),
                        batches)
  np.testing.assert_allclose(ls, lx, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ps, px)
