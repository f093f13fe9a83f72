"""`Evaluator`: one model, its tokenizer and a mesh, with scoring, forced choice and sampling.

Inputs are text, token ids, or chats. A chat is a `Chat(messages, prefix)`: the conversation
rendered with the checkpoint's chat template up to an open assistant turn, whose reply begins
with `prefix`. A plain list of message dicts means `Chat(messages)`. Text contexts get the BOS
token when the run trained with it (`cfg.data.add_bos`).

Text is tokenised the way training saw it: a context's text and its continuation are encoded
together and split where the context's own tokens end (trailing spaces move to the
continuation), so "I prefer " + "cheddar" scores the pieces of "I prefer cheddar", not a stray
space token followed by an unusual split of the word.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence, Union

import numpy as np

from msm_jax import sharding as shd
from msm_jax.data.chat import ChatFormatError, end_of_turn_id, render_prompt
from msm_jax.eval import loading
from msm_jax.eval.sampling import Generation, Sampler, SamplingParams
from msm_jax.eval.scoring import ChoiceRecord, Scorer, ScoreRecord, choose
from msm_jax.model import ModelDef


@dataclasses.dataclass(frozen=True)
class Chat:
  """A conversation ending in an open assistant turn that starts with `prefix`."""
  messages: tuple
  prefix: str = ""


Context = Union[str, Sequence[int], Chat, Sequence[dict]]


class Evaluator:
  """Score and sample one model. Parameters are placed with the training layout on `mesh`."""

  def __init__(self, cfg, params, tokenizer, mesh=None, *, tokens_per_batch: int = 4096,
               batch_size: int = 8, meta: dict | None = None):
    self.cfg, self.tokenizer, self.meta = cfg, tokenizer, dict(meta or {})
    self.model_def = ModelDef(cfg.model)
    self.mesh = mesh if mesh is not None else loading.default_mesh(cfg)
    self.param_shardings = shd.named_shardings(self.mesh, self.model_def.axes)
    self.params = loading.shard_params(params, self.model_def, self.mesh)
    loading.check_finite(self.params, self._where())
    self.template = cfg.data.chat_template
    self.add_bos = bool(cfg.data.add_bos)
    self.batch_size = int(batch_size)
    self.scorer = Scorer(self.model_def, self.mesh, self.param_shardings, tokens_per_batch)
    stop_ids = [tokenizer.eos_id]
    try:
      stop_ids.append(end_of_turn_id(tokenizer, self.template))
    except ChatFormatError:
      pass  # a tokenizer without chat tokens: text prompts only
    self.sampler = Sampler(self.model_def, self.mesh, self.param_shardings,
                           vocab_limit=min(tokenizer.vocab_size, cfg.model.vocab_size),
                           stop_ids=stop_ids, pad_id=tokenizer.pad_id,
                           banned_ids=(tokenizer.pad_id, tokenizer.bos_id))

  @classmethod
  def from_checkpoint(cls, path, mesh=None, *, step: int | None = None, **kwargs) -> "Evaluator":
    """From a run workdir, its checkpoints dir, or one step's dir (latest step by default)."""
    cfg, params, tokenizer, mesh, meta = loading.load_checkpoint(path, mesh, step)
    return cls(cfg, params, tokenizer, mesh, meta=meta, **kwargs)

  # --- tokenisation ---------------------------------------------------------------------------

  def _head(self, context) -> tuple[list[int], str]:
    """A context -> (token ids that precede its text part, its text part)."""
    if isinstance(context, str):
      return ([self.tokenizer.bos_id] if self.add_bos else []), context
    if isinstance(context, Chat) or (isinstance(context, (list, tuple)) and context
                                     and isinstance(context[0], dict)):
      chat = context if isinstance(context, Chat) else Chat(tuple(context))
      return render_prompt(list(chat.messages), self.tokenizer, self.template).tolist(), chat.prefix
    return [int(t) for t in np.asarray(context).reshape(-1)], ""

  def encode_pair(self, context: Context, continuation) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation), tokenised as one text where both are text."""
    head, text = self._head(context)
    if not isinstance(continuation, str):
      return head + self.tokenizer.encode(text), [int(t) for t in continuation]
    stripped = text.rstrip()
    cont = text[len(stripped):] + continuation
    ctx_ids = self.tokenizer.encode(stripped) if stripped else []
    joint = self.tokenizer.encode(stripped + cont)
    if joint[:len(ctx_ids)] == ctx_ids and len(joint) > len(ctx_ids):
      return head + ctx_ids, joint[len(ctx_ids):]
    return head + ctx_ids, self.tokenizer.encode(cont)

  def encode_prompt(self, prompt: Context) -> list[int]:
    """Prompt ids for generation; a trailing space stays for the model to write."""
    head, text = self._head(prompt)
    return head + (self.tokenizer.encode(text.rstrip()) if text.strip() else [])

  # --- scoring --------------------------------------------------------------------------------

  def score(self, contexts: Sequence[Context], continuations: Sequence, *,
            progress: bool = False) -> list[ScoreRecord]:
    """Log-prob of each continuation after its context (one record per pair, in order)."""
    if len(contexts) != len(continuations):
      raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
    pairs = [self.encode_pair(c, x) for c, x in zip(contexts, continuations)]
    records = self.scorer(self.params, pairs, progress)
    bad = [i for i, r in enumerate(records)
           if not (math.isfinite(r.logprob_sum) and math.isfinite(r.logprob_mean))]
    if bad:
      raise loading.NonFiniteError(
          f"{self._where()}: {len(bad)} of {len(records)} scores are NaN or infinite (first: "
          f"pair {bad[0]}); a choice made from them would mean nothing")
    return records

  def _where(self) -> str:
    return self.meta.get("checkpoint") or "the evaluated parameters"

  def forced_choice(self, contexts: Sequence, options: Sequence[Sequence], *,
                    length_normalize: bool = False, progress: bool = False) -> list[ChoiceRecord]:
    """Per item, score every option after every context and pick the best.

    contexts[i] is one context, or a list of them (the same question in each presentation
    order); each option's score (log-prob sum, or per-token mean with `length_normalize`) is
    averaged over them. See `scoring.choose`.
    """
    if len(contexts) != len(options):
      raise ValueError(f"{len(contexts)} items of contexts but {len(options)} of options")
    flat_ctx, flat_opt, shape = [], [], []
    for ctx, opts in zip(contexts, options):
      orders = ctx if isinstance(ctx, list) and ctx and not isinstance(ctx[0], (int, dict)) \
          else [ctx]
      shape.append((len(orders), len(opts)))
      for c in orders:
        flat_ctx.extend([c] * len(opts))
        flat_opt.extend(opts)
    records = self.score(flat_ctx, flat_opt, progress=progress)
    out, k = [], 0
    for n_orders, n_opts in shape:
      chunk = records[k:k + n_orders * n_opts]
      k += n_orders * n_opts
      vals = [r.logprob_mean if length_normalize else r.logprob_sum for r in chunk]
      out.append(choose(np.asarray(vals).reshape(n_orders, n_opts)))
    return out

  # --- sampling -------------------------------------------------------------------------------

  def generate(self, prompts: Sequence[Context], max_new_tokens: int | Sequence[int] = 64, *,
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               stop: Sequence[str] = (), seed: int = 0, batch_size: int | None = None,
               use_cache: bool = True, progress: bool = False) -> list[Generation]:
    """Sample a continuation per prompt (greedy at temperature 0) until EOS, the chat template's
    end-of-turn token, a stop string (cut off before it) or the token limit."""
    ids = [self.encode_prompt(p) for p in prompts]
    limits = ([int(max_new_tokens)] * len(ids) if np.isscalar(max_new_tokens)
              else [int(m) for m in max_new_tokens])
    if len(limits) != len(ids):
      raise ValueError(f"{len(ids)} prompts but {len(limits)} max_new_tokens")
    sp = SamplingParams(float(temperature), int(top_k), float(top_p))
    return self.sampler(self.params, ids, limits, self.tokenizer.decode, sp=sp, stop=tuple(stop),
                        seed=seed, batch_size=batch_size or self.batch_size,
                        use_cache=use_cache, progress=progress)

  def describe(self) -> dict:
    """What identifies the evaluated model in a report."""
    return {"checkpoint": self.meta.get("checkpoint", ""), "stage": self.meta.get("stage", ""),
            "step": self.meta.get("step"), "params": self.model_def.param_count(),
            "mesh": dict(self.mesh.shape), "tokenizer_sha256": self.tokenizer.sha256}
