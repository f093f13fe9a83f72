"""The step functions: sharded == single device, loss masks, accumulation, overfitting."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax import sharding as shd
from msm_jax.loss import weighted_cross_entropy
from msm_jax.model import ModelDef
from msm_jax.train_step import StepFunctions, eval_step, loss_sums, midtrain_step
from msm_jax.loss import assistant_weights, document_weights
from tests.helpers import packed_batch, tiny_cfg


def run_steps(cfg, devices, batches):
  mesh = shd.make_mesh(cfg, devices)
  sf = StepFunctions(cfg, ModelDef(cfg.model), mesh)
  state = sf.init_state(cfg.seed)
  losses = []
  for b in batches:
    state, m = sf.train(state, shd.host_local_to_global(b, mesh))
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state.params), state


def test_eight_devices_match_one_device():
  rng = np.random.default_rng(0)
  batches = [packed_batch(rng, 8, 16, 64) for _ in range(2)]
  cfg1 = tiny_cfg(**{"mesh.data": 1})
  cfg8 = tiny_cfg(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  l1, p1, _ = run_steps(cfg1, jax.devices()[:1], batches)
  l8, p8, state8 = run_steps(cfg8, jax.devices(), batches)
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p8, p1)
  # The state really is sharded: an MLP weight is split over fsdp (embed) and tensor (mlp).
  w = state8.params["layers"]["mlp"]["w_gate"]
  assert w.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert w.addressable_shards[0].data.shape == (2, 16, 32)


def grads_and_loss(weights_fn, batch, params, md):
  f = lambda p: loss_sums(md, p, batch, weights_fn)["loss_sum"]
  return jax.value_and_grad(f)(params)


def test_finetune_ignores_prompt_targets_and_midtrain_counts_every_real_token():
  cfg = tiny_cfg()
  md = ModelDef(cfg.model)
  params = md.init(jax.random.PRNGKey(1))
  b = packed_batch(np.random.default_rng(1), 4, 16, 64)
  changed = {k: v.copy() for k, v in b.items()}
  prompt = (b["loss_mask"] == 0) & (b["segment_ids"] > 0)
  changed["targets"][prompt] = (changed["targets"][prompt] + 5) % 64
  l1, g1 = grads_and_loss(assistant_weights, b, params, md)
  l2, g2 = grads_and_loss(assistant_weights, changed, params, md)
  assert float(l1) == float(l2)
  jax.tree.map(np.testing.assert_array_equal, g1, g2)
  # Midtrain: the loss equals the mean NLL over exactly the non-padding targets.
  logits = np.asarray(md.apply(params, b["inputs"], b["positions"], b["segment_ids"])[0], np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, b["targets"][..., None], -1)[..., 0]
  real = b["segment_ids"] > 0
  sums = loss_sums(md, params, b, document_weights)
  np.testing.assert_allclose(float(sums["loss_sum"] / sums["weight_sum"]), nll[real].mean(), rtol=1e-5)
  assert float(sums["weight_sum"]) == real.sum()
  # Finetune: mean NLL over exactly the masked real targets.
  sums = loss_sums(md, params, b, assistant_weights)
  sel = real & (b["loss_mask"] > 0)
  np.testing.assert_allclose(float(sums["loss_sum"] / sums["weight_sum"]), nll[sel].mean(), rtol=1e-5)


def test_z_loss_adds_squared_log_normaliser():
  logits = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 7))
  t = jnp.zeros((2, 3), jnp.int32)
  w = jnp.ones((2, 3))
  base = weighted_cross_entropy(logits, t, w)["loss_sum"]
  z = weighted_cross_entropy(logits, t, w, z_loss=1e-2)["loss_sum"]
  lse = jax.nn.logsumexp(logits, -1)
  np.testing.assert_allclose(float(z - base), float(1e-2 * jnp.sum(lse ** 2)), rtol=1e-5)


def test_gradient_accumulation_equals_one_large_batch():
  rng = np.random.default_rng(2)
  batches = [packed_batch(rng, 8, 16, 64) for _ in range(2)]
  devices = jax.devices()[:2]
  l1, p1, _ = run_steps(tiny_cfg(**{"mesh.data": 2}), devices, batches)
  l4, p4, _ = run_steps(tiny_cfg(**{"mesh.data": 2, "microbatches": 4}), devices, batches)
  np.testing.assert_allclose(l4, l1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), p4, p1)


def test_tiny_model_overfits_a_fixed_batch():
  cfg = tiny_cfg(**{"learning_rate": 1e-2, "steps": 250, "warmup_steps": 5, "weight_decay": 0.0,
                    "mesh.data": 1})
  b = packed_batch(np.random.default_rng(3), 8, 16, 64)
  losses, _, _ = run_steps(cfg, jax.devices()[:1], [b] * cfg.steps)
  assert losses[0] > 3.5 and losses[-1] < 0.05, (losses[0], losses[-1])


@pytest.mark.parametrize("scale", [0.0, 0.25])
def test_body_lr_scale_scales_every_update_but_the_token_embeddings(scale):
  rng = np.random.default_rng(4)
  batches = [packed_batch(rng, 8, 16, 64) for _ in range(1)]
  devices = jax.devices()[:1]
  cfg = tiny_cfg(**{"mesh.data": 1, "warmup_steps": 0})
  _, p1, s1 = run_steps(cfg, devices, batches)
  _, ps, _ = run_steps(tiny_cfg(**{"mesh.data": 1, "warmup_steps": 0, "body_lr_scale": scale}),
                       devices, batches)
  p0 = jax.device_get(StepFunctions(cfg, ModelDef(cfg.model), shd.make_mesh(cfg, devices))
                      .init_state(cfg.seed).params)
  np.testing.assert_allclose(ps["embed"], p1["embed"], rtol=1e-6)  # first step: same Adam step
  assert not np.allclose(p1["embed"], p0["embed"])
  flat = lambda p: jax.tree_util.tree_flatten_with_path(p)[0]
  for (path, full), (_, scaled), (_, init) in zip(flat(p1), flat(ps), flat(p0)):
    if jax.tree_util.keystr(path) != "['embed']":
      np.testing.assert_allclose(scaled - init, scale * (full - init), rtol=1e-4, atol=1e-7)
