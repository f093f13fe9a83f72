"""Batched autoregressive sampling with a KV cache: one jitted prefill, one jitted decode loop.

Prompts of different lengths are LEFT-padded with segment 0 into a [B, P] block (positions start
at 0 at each row's first real token), so every row's next token goes to the same cache slot and
one `cache_index` serves the batch. The decode loop is a `lax.while_loop` inside jit: no Python
per token, no recompiles; it stops early once every row has hit a stop token or its own token
limit. Stop strings cannot be seen inside the loop, so with stop strings the loop runs in chunks
and the host checks the text between chunks. Shapes come from power-of-two buckets of the prompt
length and of the token budget, so a suite compiles a few programs.

`use_cache=False` runs the same loop but recomputes the full sequence every step: the reference
the cache path must match token for token, and the baseline of `benchmarks/eval.py`.

Each row draws from its own key, `fold_in(fold_in(seed, row), step)`, where row is the prompt's
index in the request: a prompt's sample does not depend on what it is batched with.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from msm_jax import sharding as shd
from msm_jax.eval.scoring import length_bucket
from msm_jax.model import KVCache, init_cache

STOP_CHUNK = 16  # tokens per decode call when stop strings must be checked on the host


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """Static: each distinct setting compiles its own loop (greedy when temperature == 0)."""
  temperature: float = 0.0
  top_k: int = 0  # 0: off
  top_p: float = 1.0  # 1: off


@dataclasses.dataclass(frozen=True)
class Generation:
  text: str
  tokens: tuple  # generated ids, without the stop token
  finish_reason: str  # "stop_token" | "stop_string" | "length"


@flax.struct.dataclass
class DecodeState:
  """The block being generated [B, C] and the next-token logits [B, V] (and the cache)."""
  tokens: jax.Array
  positions: jax.Array
  segment_ids: jax.Array
  logits: jax.Array
  cache: KVCache | None = None


@flax.struct.dataclass
class LoopState:
  """Per-row progress of the decode loop (replicated: small)."""
  step: jax.Array  # generated slots so far
  done: jax.Array  # [B]
  stopped: jax.Array  # [B] ended by a stop token
  count: jax.Array  # [B] tokens generated
  max_new: jax.Array  # [B] token limits
  next_pos: jax.Array  # [B] rotary position of the next token
  keys: jax.Array  # [B] sampling keys
  offset: jax.Array  # [B] tokens each row generated before this loop (folded into its keys)


def filter_logits(logits_BxV, sp: SamplingParams, vocab_limit: int, banned: tuple = ()):
  """Temperature, top-k and top-p applied to f32 logits. Ids the tokenizer lacks, and `banned`
  ones (padding, BOS: never text), are never drawn, greedy or not."""
  ids_V = jnp.arange(logits_BxV.shape[-1])
  allowed_V = ids_V < vocab_limit
  for i in banned:
    allowed_V &= ids_V != i
  logits_BxV = jnp.where(allowed_V, logits_BxV.astype(jnp.float32), -jnp.inf)
  if sp.temperature <= 0:
    return logits_BxV
  logits_BxV = logits_BxV / sp.temperature
  if sp.top_k > 0:
    kth_Bx1 = jax.lax.top_k(logits_BxV, sp.top_k)[0][:, -1:]
    logits_BxV = jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)
  if sp.top_p < 1.0:
    sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV  # mass strictly above each token
    keep_BxV = before_BxV < sp.top_p  # the smallest prefix reaching top_p (>= 1 token)
    cutoff_Bx1 = jnp.min(jnp.where(keep_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    logits_BxV = jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)
  return logits_BxV


def next_token(logits_BxV, keys_B, step, sp: SamplingParams, vocab_limit: int, banned=()):
  """`step`: the index of the token being drawn, one for all rows or one per row [B]."""
  logits_BxV = filter_logits(logits_BxV, sp, vocab_limit, banned)
  if sp.temperature <= 0:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  step_B = jnp.broadcast_to(jnp.asarray(step, jnp.int32), keys_B.shape)
  step_keys = jax.vmap(jax.random.fold_in)(keys_B, step_B)
  return jax.vmap(jax.random.categorical)(step_keys, logits_BxV).astype(jnp.int32)


def _cache_constraint(cache: KVCache) -> KVCache:
  kv = ("layers", "batch", "cache_length", "kv_heads", "head_dim")
  return KVCache(k=shd.constrain(cache.k, kv), v=shd.constrain(cache.v, kv),
                 segment_ids=shd.constrain(cache.segment_ids, ("batch", "cache_length")))


def prefill(model_def, params, tokens_BxC, positions_BxC, segment_ids_BxC, prompt_len: int,
            use_cache: bool) -> DecodeState:
  """Run the prompt block [:, :P] and return the decode state (next-token logits at slot P-1)."""
  b, c = tokens_BxC.shape
  p = prompt_len
  cache = _cache_constraint(init_cache(model_def.cfg, b, c)) if use_cache else None
  logits_BxPxV, cache = model_def.apply(params, tokens_BxC[:, :p], positions_BxC[:, :p],
                                        segment_ids_BxC[:, :p], cache, 0 if use_cache else None)
  return DecodeState(tokens=tokens_BxC, positions=positions_BxC, segment_ids=segment_ids_BxC,
                     logits=logits_BxPxV[:, -1],
                     cache=_cache_constraint(cache) if use_cache else None)


def decode(model_def, params, state: DecodeState, loop: LoopState, limit, *, prompt_len: int,
           use_cache: bool, sp: SamplingParams, vocab_limit: int, stop_ids: tuple,
           banned: tuple = ()) -> tuple[DecodeState, LoopState]:
  """Generate until step == limit or every row is done."""
  p = prompt_len
  stop_S = jnp.asarray(stop_ids, jnp.int32)

  def cond(carry):
    _, lp = carry
    return (lp.step < limit) & ~jnp.all(lp.done)

  def body(carry):
    st, lp = carry
    step, done_B, pos_B = lp.step, lp.done, lp.next_pos
    tok_B = next_token(st.logits, lp.keys, step + lp.offset, sp, vocab_limit, banned)
    tok_B = jnp.where(done_B, 0, tok_B)
    slot = p + step
    put = lambda a, x_B: jax.lax.dynamic_update_slice_in_dim(a, x_B[:, None], slot, 1)
    st = st.replace(tokens=put(st.tokens, tok_B), positions=put(st.positions, pos_B),
                    segment_ids=put(st.segment_ids, jnp.ones_like(tok_B)))
    count_B = lp.count + (~done_B).astype(jnp.int32)
    stopped_B = jnp.any(tok_B[:, None] == stop_S[None, :], axis=-1) & ~done_B
    lp = lp.replace(step=step + 1, count=count_B, next_pos=lp.next_pos + 1,
                    stopped=lp.stopped | stopped_B,
                    done=done_B | stopped_B | (count_B >= lp.max_new))
    if use_cache:
      logits_Bx1xV, cache = model_def.apply(params, tok_B[:, None], pos_B[:, None],
                                            jnp.ones_like(tok_B)[:, None], st.cache, slot)
      st = st.replace(cache=_cache_constraint(cache), logits=logits_Bx1xV[:, 0])
    else:
      logits_BxCxV, _ = model_def.apply(params, st.tokens, st.positions, st.segment_ids)
      st = st.replace(logits=jax.lax.dynamic_index_in_dim(logits_BxCxV, slot, 1, keepdims=False))
    return st, lp

  return jax.lax.while_loop(cond, body, (state, loop))


class Sampler:
  """Jitted prefill and decode for one model on one mesh."""

  def __init__(self, model_def, mesh, param_shardings, *, vocab_limit: int, stop_ids,
               pad_id: int = 0, banned_ids=()):
    self.model_def, self.mesh = model_def, mesh
    self.shards = shd.batch_shards(mesh)
    self.param_shardings = param_shardings
    self.vocab_limit, self.stop_ids, self.pad_id = int(vocab_limit), tuple(stop_ids), pad_id
    self.banned = tuple(int(i) for i in banned_ids if i not in self.stop_ids)
    self.batch_sharding = shd.batch_sharding(mesh)
    self._prefill = {}
    self._decode = {}
    # Host reads go through a replicated copy: on several hosts a batch-sharded array is not
    # fully addressable by any one of them.
    self._replicate = jax.jit(lambda x: x, out_shardings=shd.replicated(mesh))

  def _fetch(self, x) -> np.ndarray:
    return np.array(jax.device_get(self._replicate(x)))

  def _fns(self, prompt_len: int, use_cache: bool, sp: SamplingParams):
    key = (prompt_len, use_cache)
    if key not in self._prefill:
      self._prefill[key] = jax.jit(
          functools.partial(prefill, self.model_def, prompt_len=prompt_len, use_cache=use_cache),
          in_shardings=(self.param_shardings,) + (self.batch_sharding,) * 3)
    dkey = (prompt_len, use_cache, sp)
    if dkey not in self._decode:
      self._decode[dkey] = jax.jit(
          functools.partial(decode, self.model_def, prompt_len=prompt_len, use_cache=use_cache,
                            sp=sp, vocab_limit=self.vocab_limit, stop_ids=self.stop_ids,
                            banned=self.banned),
          donate_argnums=(1, 2))
    return self._prefill[key], self._decode[dkey]

  def start(self, params, prompts: Sequence[list], max_new: Sequence[int], keys, *, rows: int,
            prompt_len: int, budget: int, sp: SamplingParams, use_cache: bool = True,
            offsets: Sequence[int] | None = None):
    """Left-pad one group of prompts into a [rows, prompt_len + budget] block and prefill it.
    `keys`: one sampling key per prompt; `offsets`: per prompt, how many of its tokens were
    generated before (a resumed row draws its next token with the key of that step).
    -> (DecodeState, LoopState, the jitted decode fn); shared by `__call__` and the server's
    batching loop (msm_jax.serve.engine)."""
    p, c = prompt_len, prompt_len + budget
    tokens = np.full((rows, c), self.pad_id, np.int32)
    positions = np.zeros((rows, c), np.int32)
    segments = np.zeros((rows, c), np.int32)
    limits = np.zeros((rows,), np.int32)
    lengths = np.ones((rows,), np.int32)
    for r, ids in enumerate(prompts):
      ids = np.asarray(ids, np.int32)
      tokens[r, p - len(ids):p] = ids
      positions[r, p - len(ids):p] = np.arange(len(ids))
      segments[r, p - len(ids):p] = 1
      limits[r], lengths[r] = max_new[r], len(ids)
    for r in range(len(prompts), rows):  # filler rows: one real token, nothing to generate
      segments[r, p - 1] = 1
    row_keys = jnp.concatenate([jnp.asarray(keys).reshape(-1)[:len(prompts)],
                                jnp.repeat(jax.random.key(0)[None], rows - len(prompts), 0)])
    prefill_fn, decode_fn = self._fns(p, use_cache, sp)
    loop = LoopState(step=jnp.zeros((), jnp.int32), done=jnp.asarray(limits <= 0),
                     stopped=jnp.zeros((rows,), bool), count=jnp.zeros((rows,), jnp.int32),
                     max_new=jnp.asarray(limits), next_pos=jnp.asarray(lengths), keys=row_keys,
                     offset=jnp.asarray(np.pad(np.asarray(offsets or [0] * len(prompts),
                                                          np.int32), (0, rows - len(prompts)))))
    loop = jax.device_put(loop, shd.replicated(self.mesh))
    placed = [jax.device_put(a, self.batch_sharding) for a in (tokens, positions, segments)]
    with shd.activate(self.mesh):
      state = prefill_fn(params, *placed)
    return state, loop, decode_fn

  def __call__(self, params, prompts: Sequence[list], max_new: Sequence[int], decode_text,
               *, sp: SamplingParams, stop: Sequence[str] = (), seed: int = 0,
               batch_size: int = 8, use_cache: bool = True, progress: bool = False,
               budget: int | None = None) -> list[Generation]:
    """`prompts`: token ids; `max_new`: per-prompt token limits; `decode_text`: ids -> str.
    `budget`: the generation slots to compile for (default: the largest limit); a fixed one
    lets calls with different limits share one program."""
    rows = max(1, -(-batch_size // self.shards)) * self.shards
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    base_key = jax.random.key(seed)
    out: list[Generation | None] = [None] * len(prompts)
    groups = [order[i:i + rows] for i in range(0, len(order), rows)]
    for idx in tqdm(groups, desc="generate", unit="batch", disable=not progress, leave=False):
      p = length_bucket(max(len(prompts[i]) for i in idx))
      n = length_bucket(max(budget or max(max_new[i] for i in idx), 1))
      keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base_key, jnp.asarray(idx, jnp.int32))
      state, loop, decode_fn = self.start(params, [prompts[i] for i in idx],
                                          [max_new[i] for i in idx], keys, rows=rows,
                                          prompt_len=p, budget=n, sp=sp, use_cache=use_cache)
      with shd.activate(self.mesh):
        cut = {}  # row -> generated-token count at which a stop string ended it
        while True:
          step = int(self._fetch(loop.step))
          limit = min(n, step + STOP_CHUNK) if stop else n
          state, loop = decode_fn(params, state, loop, jnp.asarray(limit, jnp.int32))
          done = self._fetch(loop.done)
          if stop:
            gen = self._fetch(state.tokens)[:, p:]
            count = self._fetch(loop.count)
            for r in range(len(idx)):
              if r not in cut and any(s in decode_text(gen[r, :count[r]]) for s in stop):
                cut[r] = count[r]
            if cut:
              done[list(cut)] = True
              loop = loop.replace(done=jax.device_put(jnp.asarray(done), shd.replicated(self.mesh)))
          if done.all() or int(self._fetch(loop.step)) >= n:
            break
      gen = self._fetch(state.tokens)[:, p:]
      count, stopped = self._fetch(loop.count), self._fetch(loop.stopped)
      for r, i in enumerate(idx):
        ids = gen[r, :count[r]]
        if stopped[r] and r not in cut:
          out[i] = Generation(decode_text(ids[:-1]), tuple(ids[:-1].tolist()), "stop_token")
        elif r in cut:
          text = decode_text(ids)
          at = min(text.find(s) for s in stop if s in text)
          out[i] = Generation(text[:at], tuple(ids.tolist()), "stop_string")
        else:
          out[i] = Generation(decode_text(ids), tuple(ids.tolist()), "length")
    return out
