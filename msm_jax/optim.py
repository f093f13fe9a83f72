"""The optimizer: AdamW with linear warmup then cosine decay, weight decay on matrices only, and
global-norm clipping."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(cfg) -> optax.Schedule:
  warmup = min(int(cfg.warmup_steps), int(cfg.steps))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
      decay_steps=max(int(cfg.steps), warmup + 1),
      end_value=cfg.learning_rate * cfg.lr_final_fraction)


def make_optimizer(cfg) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  return optax.chain(
      optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip > 0 else optax.identity(),
      optax.adamw(learning_rate_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps,
                  weight_decay=cfg.weight_decay, mask=decay_mask))
