"""The train state and the jitted step functions: `midtrain_step` and `finetune_step`.

Both are one function, `train_step`, with a different token-weight function (see `loss.py`). The
state is created already sharded (abstract shapes first, then a jitted init with
`out_shardings`), and the steps are jitted with explicit in/out shardings and the state donated.

With LoRA (`lora.LoraModel` as the model), `params` are the adapters: only they get gradients,
optimizer moments and checkpoint bytes. The frozen base is an extra, non-donated argument of the
jitted steps (`StepFunctions.set_base`), never part of the state.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from msm_jax import sharding as shd
from msm_jax.loss import WEIGHTS_BY_STAGE, assistant_weights, document_weights, weighted_cross_entropy
from msm_jax.lora import LoraModel
from msm_jax.model import ModelDef
from msm_jax.optim import learning_rate_schedule, make_optimizer


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array


def state_shardings(model_def: ModelDef, tx, mesh) -> TrainState:
  """NamedShardings for every leaf of the state: parameters and their optimizer moments follow
  the logical-axis rules, scalars are replicated."""
  param_sh = shd.named_shardings(mesh, model_def.axes)
  abstract_params = model_def.pure_abstract()
  abstract_opt = jax.eval_shape(tx.init, abstract_params)
  repl = shd.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract_opt, param_sh,
                                 transform_non_params=lambda _: repl)
  return TrainState(step=repl, params=param_sh, opt_state=opt_sh, rng=repl)


def init_state(model_def: ModelDef, tx, mesh, seed: int) -> TrainState:
  """A fresh state, created directly in its sharded layout."""
  shardings = state_shardings(model_def, tx, mesh)

  @functools.partial(jax.jit, out_shardings=shardings)
  def init(key):
    init_key, rng = jax.random.split(key)
    params = model_def.init(init_key)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=rng)

  with shd.activate(mesh):
    return init(jax.random.PRNGKey(seed))


def fresh_optimizer(state: TrainState, tx, mesh, model_def) -> TrainState:
  """Same parameters, new optimizer state and step 0 (fine-tune from a midtrained model)."""
  shardings = state_shardings(model_def, tx, mesh)
  init_opt = jax.jit(tx.init, out_shardings=shardings.opt_state)
  return state.replace(step=jax.device_put(jnp.zeros((), jnp.int32), shardings.step),
                       opt_state=init_opt(state.params))


def _split_microbatches(batch, k):
  """[B, T] -> [k, B/k, T] taking every k-th row, so each microbatch spans all batch shards."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)


def loss_sums(model_def: ModelDef, params, batch, weights_fn, z_loss=0.0, **frozen):
  """`frozen`: with LoRA, `base=` the frozen weights and `rng=` the adapter dropout key."""
  logits, _ = model_def.apply(params, batch["inputs"], batch["positions"], batch["segment_ids"],
                              **frozen)
  return weighted_cross_entropy(logits, batch["targets"], weights_fn(batch), z_loss)


def train_step(state: TrainState, batch, base=None, *, model_def, tx, schedule, weights_fn,
               microbatches=1, z_loss=0.0, skip_nonfinite=False):
  """One optimizer update; gradients accumulate over `microbatches` with a scan. `base`: the
  frozen weights under LoRA adapters (`state.params`), else None.

  `metrics["finite"]` is 1.0 when the loss, the gradients and the updated parameters are all
  finite (the flag of the state returned, so the host can refuse to checkpoint a bad one). With
  `skip_nonfinite`, a non-finite update is dropped: parameters and optimizer state come back
  unchanged (the step counter still advances past the batch)."""
  def grad_fn(params, mb, i=0):
    frozen = {} if base is None else {
        "base": base, "rng": jax.random.fold_in(jax.random.fold_in(state.rng, state.step), i)}

    def f(p):
      sums = loss_sums(model_def, p, mb, weights_fn, z_loss, **frozen)
      return sums["loss_sum"], sums
    grads, sums = jax.grad(f, has_aux=True)(params)
    sums["tokens"] = jnp.sum(mb["segment_ids"] > 0).astype(jnp.float32)
    return grads, sums

  if microbatches == 1:
    grads, sums = grad_fn(state.params, batch)
  else:
    def body(acc, mb_i):
      mb, i = mb_i
      mb = jax.tree.map(lambda x: shd.constrain(x, ("batch", "length")), mb)
      return jax.tree.map(jnp.add, acc, grad_fn(state.params, mb, i)), None
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, state.params,
                                                       jax.tree.map(lambda x: x[0], _split_microbatches(batch, microbatches))))
    (grads, sums), _ = jax.lax.scan(body, zeros, (_split_microbatches(batch, microbatches),
                                                  jnp.arange(microbatches)))

  denom = jnp.maximum(sums["weight_sum"], 1.0)
  grads = jax.tree.map(lambda g: g / denom, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {"loss": sums["loss_sum"] / denom, "accuracy": sums["correct_sum"] / denom,
             "grad_norm": optax.tree.norm(grads), "learning_rate": schedule(state.step),
             "loss_tokens": sums["weight_sum"], "tokens": sums["tokens"]}
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
  finite = jnp.all(jnp.stack([jnp.isfinite(metrics["loss"]), jnp.isfinite(metrics["grad_norm"]),
                              *(jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params))]))
  if skip_nonfinite:
    kept = state.replace(step=state.step + 1)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, kept)
  metrics["finite"] = finite.astype(jnp.float32)
  return new_state, metrics


def eval_step(params, batch, base=None, *, model_def, weights_fn):
  return loss_sums(model_def, params, batch, weights_fn, **({} if base is None else {"base": base}))


midtrain_step = functools.partial(train_step, weights_fn=document_weights)
finetune_step = functools.partial(train_step, weights_fn=assistant_weights)


class StepFunctions:
  """The jitted train and eval steps of one stage, with explicit shardings and donation."""

  def __init__(self, cfg, model_def: ModelDef, mesh, tx=None):
    self.mesh, self.model_def = mesh, model_def
    self.tx = tx or make_optimizer(cfg)
    self.schedule = learning_rate_schedule(cfg)
    self.weights_fn = WEIGHTS_BY_STAGE[cfg.stage]
    self.state_shardings = state_shardings(model_def, self.tx, mesh)
    batch_sh, repl = shd.batch_sharding(mesh), shd.replicated(mesh)
    # LoRA: the frozen base, an extra argument of both steps (set_base); none otherwise
    self.base_shardings = (shd.named_shardings(mesh, model_def.base_axes)
                           if isinstance(model_def, LoraModel) else None)
    base_sh = () if self.base_shardings is None else (self.base_shardings,)
    self._base = ()
    step = functools.partial(train_step, model_def=model_def, tx=self.tx, schedule=self.schedule,
                             weights_fn=self.weights_fn, microbatches=int(cfg.microbatches),
                             z_loss=float(cfg.z_loss),
                             skip_nonfinite=cfg.get("nonfinite", "stop") == "skip")
    self._train = jax.jit(step, in_shardings=(self.state_shardings, batch_sh, *base_sh),
                          out_shardings=(self.state_shardings, repl), donate_argnums=(0,))
    self._eval = jax.jit(functools.partial(eval_step, model_def=model_def, weights_fn=self.weights_fn),
                         in_shardings=(self.state_shardings.params, batch_sh, *base_sh),
                         out_shardings=repl)

  def set_base(self, base) -> None:
    """LoRA: the frozen base weights, cast to lora.base_dtype and placed on the mesh."""
    if self.base_shardings is None:
      raise ValueError("set_base: this run trains every parameter (config.lora.rank = 0)")
    prepare = jax.jit(self.model_def.prepare_base, out_shardings=self.base_shardings)
    with shd.activate(self.mesh):
      self._base = (prepare(base),)

  @property
  def base(self):
    return self._base[0] if self._base else None

  def _args(self):
    if self.base_shardings is not None and not self._base:
      raise ValueError("LoRA run: call set_base(base params) before stepping")
    return self._base

  def train(self, state, batch):
    with shd.activate(self.mesh):
      return self._train(state, batch, *self._args())

  def eval(self, params, batch):
    with shd.activate(self.mesh):
      return self._eval(params, batch, *self._args())

  def init_state(self, seed) -> TrainState:
    return init_state(self.model_def, self.tx, self.mesh, seed)

  def lower_train(self, state, batch):
    """The train step lowered for these (possibly abstract) inputs; `.compile()` it ahead of
    time (`msm plan`)."""
    base = self._base
    if self.base_shardings is not None and not base:  # LoRA: the frozen base, abstract
      base = (jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                           self.model_def.base_abstract(), self.base_shardings),)
    with shd.activate(self.mesh):
      return self._train.lower(state, batch, *base)
