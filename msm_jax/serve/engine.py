"""The server's batching loop: queued generation jobs decoded together in waves of fixed-size
blocks, on one engine thread, with the eval harness's jitted prefill and decode loop.

Batching is by fixed ticks. The engine thread takes up to `slots` queued jobs that share one
sampling setting (temperature, top-k, top-p are static in the compiled loop), left-pads them
into a [slots, P + N] block (P, N: power-of-two buckets of the longest context and token limit,
`Sampler.start`), prefills, and decodes `chunk` tokens per call. Between chunks it streams each
row's new text, applies stop strings, and marks done the rows whose client went away. New jobs
are admitted between chunks too: the cache has one write index for the whole block, so when
queued jobs could fill at least half as many rows as are still live, the wave ends there and
the next one starts with the live rows (re-prefilled with their prompt plus what they generated)
and the newcomers. Shapes come from the buckets only, so nothing compiles per request (each
distinct sampling setting compiles its own loop once).

A job's sample depends only on its prompt, settings and key: the key is
`fold_in(key(seed), choice)`, the same key `Evaluator.generate([prompt], seed=seed)` gives its
row, and each token folds in its own index (counted across waves: `LoopState.offset`).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp

from msm_jax import sharding as shd
from msm_jax.eval.sampling import SamplingParams
from msm_jax.eval.scoring import length_bucket

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
  """More jobs than the queue holds: the client should retry later (HTTP 429)."""


@dataclasses.dataclass
class Job:
  """One sequence to generate. `emit(event)` is called from the engine thread with
  {"text": delta} while it runs and {"text": delta, "finish_reason", "tokens"} once at the end
  ({"error": message} if the wave failed)."""
  ids: list
  max_new: int
  sp: SamplingParams
  seed: int
  choice: int = 0
  stop: tuple = ()
  emit: Callable[[dict], None] = lambda event: None
  cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)
  gen: list = dataclasses.field(default_factory=list)  # tokens generated in earlier waves
  sent: str = ""  # text emitted so far


class Engine:
  """Owns the device for generation: `submit` from any thread, results come back via `emit`."""

  def __init__(self, evaluator, *, slots: int = 16, max_queue: int = 256, chunk: int = 8,
               gather_s: float = 0.005, gather_max_s: float = 0.05,
               admit_ratio: float | None = 0.5):
    """`admit_ratio`: end a wave early when queued jobs could fill this fraction of its live
    rows (None: admit only between waves)."""
    self.ev = evaluator
    self.sampler = evaluator.sampler
    shards = self.sampler.shards
    self.rows = max(1, -(-int(slots) // shards)) * shards
    self.max_queue, self.chunk = int(max_queue), int(chunk)
    self.gather_s, self.gather_max_s = float(gather_s), float(gather_max_s)
    self.admit_ratio = admit_ratio
    self._pending: collections.deque[Job] = collections.deque()
    self._cv = threading.Condition()
    self._closed = False
    self.stats = collections.Counter()
    self._thread = threading.Thread(target=self._loop, name="msm-serve-engine", daemon=True)
    self._thread.start()

  def submit(self, jobs: list[Job]) -> None:
    """Queue jobs (all or none); QueueFull if that would exceed `max_queue`."""
    with self._cv:
      if self._closed:
        raise QueueFull("the engine is shutting down")
      if len(self._pending) + len(jobs) > self.max_queue:
        self.stats["rejected"] += len(jobs)
        raise QueueFull(f"{len(self._pending)} jobs queued (limit {self.max_queue})")
      self._pending.extend(jobs)
      self._cv.notify()

  def queued(self) -> int:
    with self._cv:
      return len(self._pending)

  def close(self) -> None:
    with self._cv:
      self._closed = True
      self._cv.notify()
    self._thread.join(timeout=30)

  def _take(self, carry: list[Job]) -> list[Job] | None:
    """`carry` (rows resumed from the last wave) plus queued jobs with the same settings, or,
    with nothing carried, the oldest live job and the next ones like it (at most `rows`)."""
    with self._cv:
      while not carry:
        while self._pending and self._pending[0].cancelled.is_set():
          self._pending.popleft()
        if self._pending:
          break
        if self._closed:
          return None
        self._cv.wait()
      if not carry:
        # Let requests sent together land in one wave: wait while they keep arriving (each
        # within gather_s of the last), at most gather_max_s.
        deadline = time.monotonic() + self.gather_max_s
        while 0 < len(self._pending) < self.rows and time.monotonic() < deadline:
          before = len(self._pending)
          self._cv.wait(min(self.gather_s, max(0.0, deadline - time.monotonic())))
          if len(self._pending) == before:
            break
      sp = (carry or self._pending)[0].sp
      wave, rest = list(carry), collections.deque()
      while self._pending:
        job = self._pending.popleft()
        if job.cancelled.is_set():
          continue
        (wave if job.sp == sp and len(wave) < self.rows else rest).append(job)
      self._pending = rest
      return wave

  def _joinable(self, sp: SamplingParams, free: int) -> int:
    """How many queued jobs could join a wave with these settings and `free` rows."""
    with self._cv:
      return min(free, sum(1 for j in self._pending if j.sp == sp and not j.cancelled.is_set()))

  def _loop(self) -> None:
    carry: list[Job] = []
    while (wave := self._take(carry)) is not None:
      if not wave:  # every queued job was cancelled
        carry = []
        continue
      try:
        carry = self._run(wave)
      except Exception as e:  # a failed wave fails its jobs, never the server
        log.exception("generation wave failed")
        carry = []
        for job in wave:
          job.emit({"error": f"{type(e).__name__}: {e}"})

  def _run(self, jobs: list[Job]) -> list[Job]:
    """Decode one wave; -> the unfinished jobs when it stops early to admit queued ones."""
    s, ev = self.sampler, self.ev
    contexts = [j.ids + j.gen for j in jobs]
    limits = [j.max_new - len(j.gen) for j in jobs]
    p = length_bucket(max(len(c) for c in contexts))
    n = length_bucket(max(max(j.max_new for j in jobs), 1))  # not the remaining: fewer shapes
    keys = jnp.stack([jax.random.fold_in(jax.random.key(j.seed), j.choice) for j in jobs])
    state, loop, decode_fn = s.start(ev.params, contexts, limits, keys, rows=self.rows,
                                     prompt_len=p, budget=n, sp=jobs[0].sp,
                                     offsets=[len(j.gen) for j in jobs])
    self.stats["waves"] += 1
    self.stats["jobs"] += len(jobs)
    finished = [False] * len(jobs)
    hold = [max((len(x) for x in j.stop), default=1) - 1 for j in jobs]
    with shd.activate(s.mesh):
      while True:
        step = int(s._fetch(loop.step))
        state, loop = decode_fn(ev.params, state, loop,
                                jnp.asarray(min(n, step + self.chunk), jnp.int32))
        gen = s._fetch(state.tokens)[:, p:]
        done, count, stopped = (s._fetch(x) for x in (loop.done, loop.count, loop.stopped))
        newly_done = False
        for r, job in enumerate(jobs):
          if finished[r]:
            continue
          ids = job.gen + gen[r, :count[r] - int(stopped[r])].tolist()
          text = ev.tokenizer.decode(ids)
          reason = None
          hits = [text.find(x) for x in job.stop if x in text]
          if hits:
            text, reason = text[:min(hits)], "stop"
          elif stopped[r]:
            reason = "stop"
          elif done[r] or len(ids) >= job.max_new:
            reason = "length"
          if job.cancelled.is_set():
            reason = "cancelled"
          if reason is None:
            safe = text[:max(len(job.sent), len(text) - hold[r])]
            if len(safe) > len(job.sent):
              job.emit({"text": safe[len(job.sent):]})
              job.sent = safe
            continue
          finished[r] = True
          newly_done |= not done[r]
          done[r] = True
          self.stats["tokens"] += len(ids) + int(stopped[r])
          if reason == "cancelled":
            self.stats["cancelled"] += 1
            self.stats["cancelled_tokens_last"] = len(ids)
          job.emit({"text": text[len(job.sent):], "finish_reason": reason, "tokens": ids,
                    "usage": len(ids) + int(stopped[r])})
        live = [r for r in range(len(jobs)) if not finished[r]]
        if not live:
          return []
        if int(s._fetch(loop.step)) >= n:
          raise RuntimeError(f"rows {live} still live after the wave's {n} tokens")
        if (self.admit_ratio is not None and self._joinable(jobs[0].sp, self.rows - len(live))
            >= max(1, int(len(live) * self.admit_ratio))):
          # Queued jobs are waiting and enough rows are free: end the wave here and carry the
          # live rows into the next one, re-prefilled with what they generated so far.
          self.stats["resumed"] += len(live)
          for r in live:
            jobs[r].gen = jobs[r].gen + gen[r, :count[r]].tolist()
          return [jobs[r] for r in live]
        if newly_done:  # stop strings and cancellations end rows the loop cannot see
          loop = loop.replace(done=jax.device_put(jnp.asarray(done), shd.replicated(s.mesh)))
