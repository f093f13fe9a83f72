"""The one loss core that every stage uses, and the per-stage token weights.

Midtraining (and pretraining) and fine-tuning differ only in which target tokens count: every real
token of a packed document, or only the assistant's tokens of a chat. The core returns sums, not
means, so gradient accumulation over microbatches can normalise by the weight of the whole batch
and match one step on the large batch exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def document_weights(batch):
  """midtrain / pretrain: every real (non-padding) target token."""
  return (batch["segment_ids"] > 0).astype(jnp.float32)


def assistant_weights(batch):
  """finetune: only target tokens marked by the chat template's loss mask (assistant replies)."""
  return ((batch["segment_ids"] > 0) & (batch["loss_mask"] > 0)).astype(jnp.float32)


WEIGHTS_BY_STAGE = {"pretrain": document_weights, "midtrain": document_weights,
                    "finetune": assistant_weights}


def weighted_cross_entropy(logits_BxTxV, targets_BxT, weights_BxT, z_loss: float = 0.0):
  """Sums of (cross-entropy [+ z-loss]) * weight, weight, and weighted correct predictions."""
  logits = logits_BxTxV.astype(jnp.float32)
  lse_BxT = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BxT = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  nll_BxT = lse_BxT - target_logit_BxT
  if z_loss:
    nll_BxT = nll_BxT + z_loss * jnp.square(lse_BxT)
  correct_BxT = (jnp.argmax(logits, axis=-1) == targets_BxT).astype(jnp.float32)
  return {"loss_sum": jnp.sum(nll_BxT * weights_BxT),
          "weight_sum": jnp.sum(weights_BxT),
          "correct_sum": jnp.sum(correct_BxT * weights_BxT)}
