"""The server's batching loop: queued generation jobs decoded together in waves of fixed-size
blocks, on one engine thread, with the eval harness's jitted prefill and decode loop.

Batching is by fixed ticks. The engine thread takes up to `slots` queued jobs that share one
sampling setting (temperature, top-k, top-p are static in the compiled loop), left-pads them
into a [slots, P + N] block (P, N: power-of-two buckets of the longest prompt and token limit,
`Sampler.start`), prefills, and decodes `chunk` tokens per call. Between chunks it streams each
row's new text, applies stop strings, and marks done the rows whose client went away; the wave
ends when every row is done, and the next wave admits whatever queued meanwhile. Admission
happens only between waves: the cache has one write index for the whole block, so a row cannot
restart mid-wave without a per-row cache index in the model. Shapes come from the buckets only,
so nothing compiles per request (each distinct sampling setting compiles its own loop once).

A job's sample depends only on its prompt, settings and key: the key is
`fold_in(key(seed), choice)`, the same key `Evaluator.generate([prompt], seed=seed)` gives its
row, and each step folds in the step number, which every row of a wave shares from 0.
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
import numpy as np

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


class Engine:
  """Owns the device for generation: `submit` from any thread, results come back via `emit`."""

  def __init__(self, evaluator, *, slots: int = 16, max_queue: int = 256, chunk: int = 8,
               gather_s: float = 0.005, gather_max_s: float = 0.05):
    self.ev = evaluator
    self.sampler = evaluator.sampler
    shards = self.sampler.shards
    self.rows = max(1, -(-int(slots) // shards)) * shards
    self.max_queue, self.chunk = int(max_queue), int(chunk)
    self.gather_s, self.gather_max_s = float(gather_s), float(gather_max_s)
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

  def _take(self) -> list[Job] | None:
    """The oldest live job and the next queued ones with the same settings (at most `rows`)."""
    with self._cv:
      while True:
        while self._pending and self._pending[0].cancelled.is_set():
          self._pending.popleft()
        if self._pending:
          break
        if self._closed:
          return None
        self._cv.wait()
      # Let requests sent together land in one wave: wait while they keep arriving (each
      # within gather_s of the last), at most gather_max_s.
      deadline = time.monotonic() + self.gather_max_s
      while 0 < len(self._pending) < self.rows and time.monotonic() < deadline:
        before = len(self._pending)
        self._cv.wait(min(self.gather_s, max(0.0, deadline - time.monotonic())))
        if len(self._pending) == before:
          break
      sp = self._pending[0].sp
      wave, rest = [], collections.deque()
      while self._pending:
        job = self._pending.popleft()
        if job.cancelled.is_set():
          continue
        (wave if job.sp == sp and len(wave) < self.rows else rest).append(job)
      self._pending = rest
      return wave

  def _loop(self) -> None:
    while (wave := self._take()) is not None:
      try:
        self._run(wave)
      except Exception as e:  # a failed wave fails its jobs, never the server
        log.exception("generation wave failed")
        for job in wave:
          job.emit({"error": f"{type(e).__name__}: {e}"})

  def _run(self, jobs: list[Job]) -> None:
    s, ev = self.sampler, self.ev
    p = length_bucket(max(len(j.ids) for j in jobs))
    n = length_bucket(max(max(j.max_new for j in jobs), 1))
    keys = jnp.stack([jax.random.fold_in(jax.random.key(j.seed), j.choice) for j in jobs])
    state, loop, decode_fn = s.start(ev.params, [j.ids for j in jobs], [j.max_new for j in jobs],
                                     keys, rows=self.rows, prompt_len=p, budget=n, sp=jobs[0].sp)
    self.stats["waves"] += 1
    self.stats["jobs"] += len(jobs)
    sent = [""] * len(jobs)  # text already emitted per row
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
          ids = gen[r, :count[r] - int(stopped[r])]
          text = ev.tokenizer.decode(ids)
          reason = None
          hits = [text.find(x) for x in job.stop if x in text]
          if hits:
            text, reason = text[:min(hits)], "stop"
          elif stopped[r]:
            reason = "stop"
          elif done[r] or count[r] >= job.max_new:
            reason = "length"
          if job.cancelled.is_set():
            reason = "cancelled"
          if reason is None:
            safe = text[:max(len(sent[r]), len(text) - hold[r])]
            if len(safe) > len(sent[r]):
              job.emit({"text": safe[len(sent[r]):]})
              sent[r] = safe
            continue
          finished[r] = True
          newly_done |= not done[r]
          done[r] = True
          self.stats["tokens"] += int(count[r])
          if reason == "cancelled":
            self.stats["cancelled"] += 1
            self.stats["cancelled_tokens_last"] = int(count[r])
          job.emit({"text": text[len(sent[r]):], "finish_reason": reason,
                    "tokens": [int(t) for t in ids]})
        if all(finished) or int(s._fetch(loop.step)) >= n:
          break
        if newly_done:  # stop strings and cancellations end rows the loop cannot see
          loop = loop.replace(done=jax.device_put(jnp.asarray(done), shd.replicated(s.mesh)))
    for r, job in enumerate(jobs):  # defensive: the loop's step reached the budget
      if not finished[r]:
        job.emit({"text": "", "finish_reason": "length", "tokens": []})
