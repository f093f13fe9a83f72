"""Log-likelihood scoring of (context, continuation) token pairs, and forced choice on top of it.

Pairs are sorted by length and cut into batches whose shapes come from a short list: the row
length is the next power of two (at least 16) and the row count fills a token budget, rounded to
the number of batch shards. So a whole suite compiles a handful of programs, whatever its
lengths. Rows are right-padded with segment 0 (masked; positions start at 0 per row), exactly
the layout the model trains on, so a scored pair sees the same computation as a one-row forward
pass. Log-probs are taken from the f32 logits over the full vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from msm_jax import sharding as shd

MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class ScoreRecord:
  logprob_sum: float  # total log-prob (nats) of the continuation given the context
  logprob_mean: float  # per continuation token
  num_tokens: int
  is_greedy: bool  # every continuation token is the argmax of its distribution
  token_logprobs: tuple = ()  # per continuation token (the server's echo/logprobs)
  top_tokens: tuple = ()  # per continuation token: the argmax id of its distribution
  top_logprobs: tuple = ()  # and that id's log-prob


@dataclasses.dataclass(frozen=True)
class ChoiceRecord:
  choice: int  # index of the chosen option
  margin: float  # score of the chosen option minus the runner-up
  prob: float  # softmax of the option scores, at the choice: P(choice | one of the options)
  option_scores: tuple  # per option, averaged over presentation orders
  order_scores: tuple  # [order][option]
  order_choices: tuple  # the choice each order alone would make


def length_bucket(n: int, minimum: int = MIN_BUCKET) -> int:
  """The next power of two >= n (at least `minimum`): the few row lengths that get compiled."""
  return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def rows_for(length: int, tokens_per_batch: int, shards: int) -> int:
  """Rows per batch for a bucket: fill the token budget, in whole multiples of the shards."""
  return max(1, tokens_per_batch // length // shards) * shards


def score_batch(model_def, params, inputs_BxT, positions_BxT, segment_ids_BxT, targets_BxT,
                weights_BxT):
  """Per row: sum of target log-probs where weight is 1, and whether each was the argmax; per
  token: the target's log-prob, the argmax id and its log-prob."""
  logits_BxTxV, _ = model_def.apply(params, inputs_BxT, positions_BxT, segment_ids_BxT)
  logz_BxT = jax.nn.logsumexp(logits_BxTxV, axis=-1)
  target_BxT = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  on_BxT = weights_BxT > 0
  logprob_B = jnp.sum(jnp.where(on_BxT, target_BxT - logz_BxT, 0.0), axis=-1)
  hit_BxT = jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT
  greedy_B = jnp.all(hit_BxT | ~on_BxT, axis=-1)
  top_BxT = jnp.argmax(logits_BxTxV, axis=-1).astype(jnp.int32)
  return (logprob_B, greedy_B, target_BxT - logz_BxT, top_BxT,
          jnp.max(logits_BxTxV, axis=-1) - logz_BxT)


class Scorer:
  """A jitted, sharded scorer of token pairs for one model on one mesh."""

  def __init__(self, model_def, mesh, param_shardings, tokens_per_batch: int = 4096):
    self.mesh = mesh
    self.shards = shd.batch_shards(mesh)
    self.tokens_per_batch = int(tokens_per_batch)
    self.batch_sharding = shd.batch_sharding(mesh)
    rep = shd.replicated(mesh)
    self._fn = jax.jit(functools.partial(score_batch, model_def),
                       in_shardings=(param_shardings,) + (self.batch_sharding,) * 5,
                       out_shardings=(rep,) * 5)

  def batches(self, lengths: Sequence[int]):
    """Yield (row length, [pair indices]) over pairs sorted longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    i = 0
    while i < len(order):
      t = length_bucket(lengths[order[i]])
      rows = rows_for(t, self.tokens_per_batch, self.shards)
      yield t, order[i:i + rows]
      i += rows

  def __call__(self, params, pairs: Sequence[tuple[list, list]], progress: bool = False
               ) -> list[ScoreRecord]:
    for ctx, cont in pairs:
      if not ctx or not cont:
        raise ValueError("every pair needs a non-empty context (e.g. the BOS token) and "
                         "continuation")
    lengths = [len(c) + len(x) - 1 for c, x in pairs]
    out: list[ScoreRecord | None] = [None] * len(pairs)
    groups = list(self.batches(lengths))
    pending = []
    for t, idx in tqdm(groups, desc="score", unit="batch", disable=not progress, leave=False):
      rows = rows_for(t, self.tokens_per_batch, self.shards)
      arrays = {k: np.zeros((rows, t), np.int32) for k in ("inputs", "positions", "segment_ids",
                                                           "targets", "weights")}
      for r, i in enumerate(idx):
        ctx, cont = pairs[i]
        seq = np.asarray(list(ctx) + list(cont), np.int32)
        n = len(seq) - 1
        arrays["inputs"][r, :n] = seq[:-1]
        arrays["targets"][r, :n] = seq[1:]
        arrays["positions"][r, :n] = np.arange(n)
        arrays["segment_ids"][r, :n] = 1
        arrays["weights"][r, len(ctx) - 1:n] = 1
      placed = [jax.device_put(arrays[k], self.batch_sharding)
                for k in ("inputs", "positions", "segment_ids", "targets", "weights")]
      with shd.activate(self.mesh):
        pending.append((idx, self._fn(params, *placed)))
      # At most two batches in flight: a freshly cloned test run hung (0% CPU, the host thread
      # blocked in dispatch) with every batch dispatched at once over 8 simulated CPU devices.
      if len(pending) > 1:
        _collect(pending.pop(0), pairs, out)
    for item in pending:
      _collect(item, pairs, out)
    return out


def _collect(item, pairs, out) -> None:
  """Fetch one dispatched batch's scores into `out`."""
  idx, arrays = item
  logprob_B, greedy_B, tok_BxT, top_BxT, top_lp_BxT = jax.device_get(arrays)
  for r, i in enumerate(idx):
    ctx, cont = pairs[i]
    n, on = len(cont), slice(len(ctx) - 1, len(ctx) + len(cont) - 1)
    out[i] = ScoreRecord(float(logprob_B[r]), float(logprob_B[r]) / n, n, bool(greedy_B[r]),
                         tuple(tok_BxT[r, on].tolist()), tuple(top_BxT[r, on].tolist()),
                         tuple(top_lp_BxT[r, on].tolist()))


def choose(order_scores_CxO) -> ChoiceRecord:
  """Forced choice from [presentation order][option] scores: average over orders, then argmax.

  Averaging each option's score over the orders cancels a preference for a position: a model
  that always favours whatever is listed first gives every option the same boost.
  """
  scores_CxO = np.asarray(order_scores_CxO, np.float64)
  option_O = scores_CxO.mean(axis=0)
  choice = int(np.argmax(option_O))
  rest = np.delete(option_O, choice)
  margin = float(option_O[choice] - rest.max()) if rest.size else math.inf
  probs_O = np.exp(option_O - option_O.max())
  probs_O /= probs_O.sum()
  return ChoiceRecord(choice, margin, float(probs_O[choice]), tuple(option_O.tolist()),
                      tuple(map(tuple, scores_CxO.tolist())),
                      tuple(int(c) for c in np.argmax(scores_CxO, axis=1)))
