"""The optimizer: AdamW with linear warmup then cosine decay, weight decay on matrices only,
global-norm clipping, and optionally a smaller step for everything but the token embeddings
(`body_lr_scale`)."""

from __future__ import annotations

import jax
import optax


def learning_rate_schedule(cfg) -> optax.Schedule:
  warmup = min(int(cfg.warmup_steps), int(cfg.steps))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
      decay_steps=max(int(cfg.steps), warmup + 1),
      end_value=cfg.learning_rate * cfg.lr_final_fraction)


def _is_embedding(path) -> bool:
  first = path[0] if path else None
  return getattr(first, "key", getattr(first, "name", None)) == "embed"


def scale_body(scale: float) -> optax.GradientTransformation:
  """Multiply every update but the input embedding table's by `scale`: with the body slowed,
  what a stage teaches about a token (an assistant's name) goes into that token's embedding,
  which is where the network's existing circuits read it from."""
  body = lambda tree: jax.tree_util.tree_map_with_path(lambda path, _: not _is_embedding(path),
                                                       tree)
  return optax.masked(optax.scale(scale), body)


def make_optimizer(cfg) -> optax.GradientTransformation:
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  parts = [optax.clip_by_global_norm(cfg.grad_clip) if cfg.grad_clip > 0 else optax.identity(),
           optax.adamw(learning_rate_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2,
                       eps=cfg.adam_eps, weight_decay=cfg.weight_decay, mask=decay_mask)]
  scale = float(cfg.get("body_lr_scale", 1.0))
  if scale != 1.0:  # only then: optimizer states of other runs keep their structure
    parts.append(scale_body(scale))
  return optax.chain(*parts)
