"""LoRA: a fresh adapter is the base model, only adapters train, merging is the adapter form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from msm_jax import lora
from msm_jax import sharding as shd
from msm_jax.config import ConfigError, validate
from msm_jax.model import ModelDef
from msm_jax.train_step import StepFunctions
from tests.helpers import packed_batch, tiny_cfg


def lora_cfg(**kw):
  return tiny_cfg(**{"lora.rank": 4, "lora.alpha": 8.0, **kw})


def random_adapters(lm, seed=0):
  """Adapters with non-zero B (a fresh one has B = 0 and would hide a wrong B layout)."""
  out = lm.init(jax.random.PRNGKey(seed))
  for i, name in enumerate(sorted(out)):
    b = out[name]["b"]
    out[name]["b"] = 0.3 * jax.random.normal(jax.random.PRNGKey(100 + i), b.shape, b.dtype)
  return out


def numpy_merge(base, adapters, scale):
  """W + scale * A B per layer, in float64 numpy: the reference for lora.merge."""
  groups = {n: g for n, (g, _) in lora.PROJECTIONS.items()}
  out = jax.tree.map(lambda w: np.asarray(w, np.float64), base)
  for name, f in adapters.items():
    a, b = np.asarray(f["a"], np.float64), np.asarray(f["b"], np.float64)
    w = out["layers"][groups[name]][name]
    for layer in range(w.shape[0]):
      r = a.shape[-1]
      ab = a[layer].reshape(-1, r) @ b[layer].reshape(r, -1)
      w[layer] += scale * ab.reshape(w.shape[1:])
  return jax.tree.map(lambda w: w.astype(np.float32), out)


def batch(seed=0, rows=8):
  return packed_batch(np.random.default_rng(seed), rows, 16, 64)


def logits(fn, b, *args):
  return np.asarray(fn(*args, b["inputs"], b["positions"], b["segment_ids"])[0])


def jitted(lm, rng=False):
  """lm.apply as one compiled function of (adapters, base[, rng], tokens, positions, segments)."""
  if rng:
    return jax.jit(lambda a, base, key, *x: lm.apply(a, *x, base=base, rng=key))
  return jax.jit(lambda a, base, *x: lm.apply(a, *x, base=base))


@pytest.mark.parametrize("scan", [True, False])
def test_fresh_adapter_is_the_base_model_and_merge_matches_adapter_form(scan):
  cfg = lora_cfg(**{"model.scan_layers": scan})
  md = ModelDef(cfg.model)
  lm = lora.model_for(cfg, md)
  base = md.init(jax.random.PRNGKey(0))
  b = batch()
  model, adapted = jax.jit(md.apply), jitted(lm)
  want = logits(model, b, base)
  fresh = lm.init(jax.random.PRNGKey(1))
  # created stacked: a leading layers axis on every factor, A kaiming-uniform, B zeros
  assert fresh["wq"]["a"].shape == (2, 32, 4) and fresh["wq"]["b"].shape == (2, 4, 4, 8)
  assert fresh["wo"]["a"].shape == (2, 4, 8, 4) and fresh["wo"]["b"].shape == (2, 4, 32)
  assert float(jnp.abs(fresh["w_down"]["a"]).max()) <= 1 / 64 ** 0.5
  assert float(jnp.abs(fresh["w_down"]["a"]).std()) > 0
  np.testing.assert_array_equal(logits(adapted, b, fresh, base), want)
  # non-zero adapters: the adapter form equals the merged weights (numpy merge as reference)
  adapters = random_adapters(lm)
  got = logits(adapted, b, adapters, base)
  assert np.abs(got - want).max() > 1e-2  # the adapter really changes the model
  merged = lm.merge(base, adapters)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6),
               merged, numpy_merge(base, adapters, cfg.lora.alpha / cfg.lora.rank))
  np.testing.assert_allclose(logits(model, b, merged), got, atol=2e-5)


def test_dropout_is_on_the_adapter_input_and_keyed():
  cfg = lora_cfg(**{"lora.dropout": 0.5})
  md = ModelDef(cfg.model)
  lm = lora.model_for(cfg, md)
  base, adapters, b = md.init(jax.random.PRNGKey(0)), random_adapters(lm), batch()
  k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
  plain, dropped = jitted(lm), jitted(lm, rng=True)
  no_drop = logits(plain, b, adapters, base)
  d1 = logits(dropped, b, adapters, base, k1)
  np.testing.assert_array_equal(d1, logits(dropped, b, adapters, base, k1))
  assert np.abs(d1 - no_drop).max() > 1e-3
  assert np.abs(d1 - logits(dropped, b, adapters, base, k2)).max() > 1e-3
  # with B = 0 the dropped adapter input contributes nothing: still exactly the base model
  fresh = lm.init(jax.random.PRNGKey(3))
  np.testing.assert_array_equal(logits(dropped, b, fresh, base, k1), logits(plain, b, fresh, base))


def test_training_changes_only_adapters_on_a_sharded_mesh():
  targets, dropout, base_dtype = ("wq", "wk", "wo", "w_up", "w_down"), 0.1, "bfloat16"
  cfg = lora_cfg(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "lora.targets": targets,
                    "lora.dropout": dropout, "lora.base_dtype": base_dtype,
                    "learning_rate": 1e-2})
  validate(cfg, 8)
  mesh = shd.make_mesh(cfg)
  md = ModelDef(cfg.model)
  lm = lora.model_for(cfg, md)
  steps = StepFunctions(cfg, lm, mesh)
  base = md.init(jax.random.PRNGKey(0))
  base_before = jax.device_get(base)
  steps.set_base(base)
  state = steps.init_state(cfg.seed)
  fresh = jax.device_get(state.params)
  assert sorted(fresh) == sorted(targets)
  # adapters are sharded like their weights' in / out axes; the rank is not split
  assert state.params["wq"]["a"].sharding.spec == P(None, "fsdp", None)
  assert state.params["wq"]["b"].sharding.spec == P(None, None, "tensor", None)
  assert state.params["wo"]["a"].sharding.spec == P(None, "tensor", None, None)
  # optimizer moments exist for the adapters only: two per adapter value plus scalars
  adapter_size = sum(x.size for x in jax.tree.leaves(fresh))
  opt_size = sum(x.size for x in jax.tree.leaves(state.opt_state))
  assert 2 * adapter_size <= opt_size <= 2 * adapter_size + 16
  losses = []
  for i in range(4):
    state, m = steps.train(state, shd.host_local_to_global(batch(i), mesh))
    losses.append(float(m["loss"]))
  trained = jax.device_get(state.params)
  for name in targets:
    assert np.abs(trained[name]["b"]).max() > 0  # B left zero: the adapter trains
    assert np.abs(trained[name]["a"] - fresh[name]["a"]).max() > 0
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(base), base_before)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(steps.base))
  # the held-out loss is the adapter model's, without dropout
  sums = jax.device_get(steps.eval(state.params, shd.host_local_to_global(batch(9), mesh)))
  merged = lm.merge(jax.device_get(steps.base), trained)
  b = batch(9)
  ref = np.asarray(md.apply(merged, b["inputs"], b["positions"], b["segment_ids"])[0], np.float64)
  logp = ref - np.log(np.exp(ref).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, b["targets"][..., None], -1)[..., 0]
  np.testing.assert_allclose(sums["loss_sum"] / sums["weight_sum"], nll[b["segment_ids"] > 0].mean(),
                             rtol=1e-4)


def test_a_lora_step_needs_its_base():
  cfg = lora_cfg(**{"mesh.data": 1})
  md = ModelDef(cfg.model)
  steps = StepFunctions(cfg, lora.model_for(cfg, md), shd.make_mesh(cfg, jax.devices()[:1]))
  state = steps.init_state(0)
  with pytest.raises(ValueError, match="set_base"):
    steps.train(state, batch())
  full = StepFunctions(tiny_cfg(**{"mesh.data": 1}), md, shd.make_mesh(cfg, jax.devices()[:1]))
  with pytest.raises(ValueError, match="rank = 0"):
    full.set_base(md.init(jax.random.PRNGKey(0)))


@pytest.mark.parametrize("field,value", [
    ("rank", -1), ("alpha", 0.0), ("dropout", 1.0), ("targets", ("wq", "q_proj")),
    ("targets", ()), ("targets", ("wq", "wq")), ("base_dtype", "int8")])
def test_bad_lora_config_names_the_field(field, value):
  cfg = lora_cfg(**{f"lora.{field}": value})
  with pytest.raises(ConfigError, match=rf"config\.lora\.{field}"):
    validate(cfg, 8)


def test_fingerprint_is_mesh_independent_and_sees_one_changed_element():
  cfg = lora_cfg()
  md = ModelDef(cfg.model)
  base = md.init(jax.random.PRNGKey(0))
  fp = lora.fingerprint(base)
  mesh = shd.make_mesh(tiny_cfg(**{"mesh.data": 1, "mesh.fsdp": 4, "mesh.tensor": 2}))
  sharded = jax.device_put(base, shd.named_shardings(mesh, md.axes))
  assert lora.fingerprint(sharded) == fp
  changed = jax.tree.map(lambda x: x, base)
  w = np.array(changed["layers"]["mlp"]["w_up"])
  w[1, 3, 5] = np.nextafter(w[1, 3, 5], np.float32(1))  # one ulp in one element
  changed["layers"]["mlp"]["w_up"] = w
  assert lora.fingerprint(changed) != fp
  swapped = jax.tree.map(lambda x: x, base)
  swapped["layers"]["attn"]["wq"] = base["layers"]["attn"]["wq"][::-1]  # layers reordered
  assert lora.fingerprint(swapped) != fp
  assert lora.fingerprint(jax.tree.map(lambda x: x.astype(jnp.bfloat16), base)) != fp


def test_plan_counts_the_adapters_as_trained_and_the_base_as_frozen():
  from msm_jax.plan import plan
  cfg = lora_cfg(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "lora.base_dtype": "bfloat16"})
  p = plan(cfg, jax.devices())
  md = ModelDef(cfg.model)
  lm = lora.model_for(cfg, md)
  steps = StepFunctions(cfg, lm, shd.make_mesh(cfg))
  steps.set_base(md.init(jax.random.PRNGKey(0)))
  state = steps.init_state(0)
  dev = jax.devices()[0]
  on_device = lambda tree: sum(s.data.nbytes for x in jax.tree.leaves(tree)
                               for s in x.addressable_shards if s.device == dev)
  assert p["param_count"] == lm.param_count()
  assert p["params_bytes"] == on_device(state.params)
  assert p["frozen_base_bytes"] == on_device(steps.base) > 0


def test_body_lr_scale_is_refused_with_lora():
  """LoRA trains no embeddings, so a slowed body would leave nothing at full rate."""
  with pytest.raises(ConfigError, match=r"config\.body_lr_scale"):
    validate(lora_cfg(body_lr_scale=0.1), 8)
  with pytest.raises(ConfigError, match=r"config\.body_lr_scale"):
    validate(tiny_cfg(body_lr_scale=1.5), 8)
