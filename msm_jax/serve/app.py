"""OpenAI-compatible HTTP API over one msm-jax checkpoint (FastAPI; served by uvicorn).

  GET  /v1/models
  POST /v1/chat/completions  messages rendered with the run's chat template; stops at its
                             end-of-turn token
  POST /v1/completions       prompt: text, token ids, or a list of texts; `echo` + `logprobs`
                             (with max_tokens=0: the prompt tokens' log-probs, what
                             log-likelihood evaluation asks for)
Both take temperature / top_p / top_k / max_tokens / stop / seed / n / stream (server-sent
events). Log-probs are the model's raw (unfiltered, temperature 1) log-probs from
`Evaluator.score`; `top_logprobs` lists the argmax token only. A bad request gets 400 with an
OpenAI error body naming the field, an unknown model 404, a full queue 429 with Retry-After.
`max_tokens` beyond the context window is cut to fit (finish_reason "length"); a prompt that
alone exceeds it is a 400.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from msm_jax.data.chat import ChatFormatError
from msm_jax.eval.sampling import SamplingParams
from msm_jax.serve.engine import Engine, Job, QueueFull

DEFAULT_MAX_TOKENS = 256


class APIError(Exception):
  def __init__(self, status: int, message: str, param: str | None = None,
               type_: str = "invalid_request_error", code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code


def _error_response(e: APIError, headers=None) -> JSONResponse:
  return JSONResponse({"error": {"message": e.message, "type": e.type, "param": e.param,
                                 "code": e.code}}, status_code=e.status, headers=headers)


def _field(body: dict, name: str, types, default=None, check=None, why: str = ""):
  """body[name] if present and well-typed (and `check` passes), else a 400 naming it."""
  value = body.get(name)
  if value is None:
    return default
  if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
    raise APIError(400, f"'{name}' must be {why or types}, got {value!r}", name)
  if not isinstance(value, types) or (check is not None and not check(value)):
    raise APIError(400, f"'{name}' must be {why}, got {value!r}", name)
  return value


class Server:
  """Request parsing, tokenisation and response shapes; generation goes through the Engine."""

  def __init__(self, evaluator, model_name: str, *, max_context: int | None = None,
               slots: int = 16, max_queue: int = 256, max_n: int = 16):
    self.ev, self.model_name = evaluator, model_name
    self.max_context = int(max_context or evaluator.cfg.seq_len)
    self.max_n = max_n
    self.engine = Engine(evaluator, slots=slots, max_queue=max_queue)
    self.created = int(time.time())
    self._score_lock = asyncio.Lock()

  # --- parsing --------------------------------------------------------------------------------

  def params(self, body: dict, prompt_len: int, max_tokens_default: int) -> dict:
    model = _field(body, "model", str, why="a string")
    if model is None:
      raise APIError(400, "'model' is required", "model")
    if model != self.model_name:
      raise APIError(404, f"the model '{model}' does not exist; this server serves "
                     f"'{self.model_name}'", "model", code="model_not_found")
    num = (int, float)
    temperature = float(_field(body, "temperature", num, 1.0, lambda v: 0 <= v <= 2,
                               "a number in [0, 2]"))
    top_p = float(_field(body, "top_p", num, 1.0, lambda v: 0 < v <= 1, "a number in (0, 1]"))
    top_k = _field(body, "top_k", int, 0, lambda v: v >= 0, "an integer >= 0")
    stop = _field(body, "stop", (str, list), [], lambda v: isinstance(v, str) or (
        len(v) <= 4 and all(isinstance(s, str) and s for s in v)), "a string or up to 4 strings")
    stop = [stop] if isinstance(stop, str) else stop
    seed = _field(body, "seed", int, None, why="an integer")
    n = _field(body, "n", int, 1, lambda v: 1 <= v <= self.max_n, f"an integer in [1, {self.max_n}]")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _field(body, name, int, max_tokens_default, lambda v: v >= 0, "an integer >= 0")
    if prompt_len > self.max_context:
      raise APIError(400, f"the prompt is {prompt_len} tokens; this model's context window is "
                     f"{self.max_context}", "messages" if "messages" in body else "prompt",
                     code="context_length_exceeded")
    stream = _field(body, "stream", bool, False, why="a boolean")
    sp = SamplingParams(temperature, top_k if temperature > 0 else 0,
                        top_p if temperature > 0 else 1.0)
    return {"sp": sp, "stop": tuple(stop), "n": n, "stream": stream,
            "seed": secrets.randbits(31) if seed is None else seed,
            "max_new": min(max_tokens, self.max_context - prompt_len)}

  def chat_ids(self, body: dict) -> list[int]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
      raise APIError(400, "'messages' must be a non-empty list of {role, content}", "messages")
    flat = []
    for i, m in enumerate(messages):
      if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise APIError(400, f"messages[{i}] must be an object with a 'role'", f"messages[{i}]")
      content = m.get("content") or ""
      if isinstance(content, list):  # content parts: text only
        if not all(isinstance(c, dict) and c.get("type") == "text" for c in content):
          raise APIError(400, f"messages[{i}].content: only text parts are supported",
                         f"messages[{i}].content")
        content = "".join(c.get("text", "") for c in content)
      if not isinstance(content, str):
        raise APIError(400, f"messages[{i}].content must be a string", f"messages[{i}].content")
      flat.append({"role": m["role"], "content": content})
    try:
      return self.ev.encode_prompt(flat)
    except ChatFormatError as e:
      raise APIError(400, f"messages: {e}", "messages") from None

  def completion_prompts(self, body: dict) -> list[tuple[str, list[int]]]:
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt
                                   and all(isinstance(t, int) for t in prompt)):
      prompt = [prompt]
    if not isinstance(prompt, list) or not prompt or not all(
        isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(t, int) for t in p))
        for p in prompt):
      raise APIError(400, "'prompt' must be a string, a list of strings, or token ids", "prompt")
    vocab = self.ev.tokenizer.vocab_size
    out = []
    for p in prompt:
      if isinstance(p, list) and not all(0 <= t < vocab for t in p):
        raise APIError(400, f"'prompt' holds token ids outside [0, {vocab})", "prompt")
      ids = self.ev.encode_prompt(p)
      out.append((p if isinstance(p, str) else self.ev.tokenizer.decode(p), ids))
    return out

  # --- generation -----------------------------------------------------------------------------

  def jobs(self, ids: list[int], prm: dict, first_choice: int = 0) -> list[tuple[Job, asyncio.Queue]]:
    loop = asyncio.get_running_loop()
    out = []
    for c in range(prm["n"]):
      queue: asyncio.Queue = asyncio.Queue()
      job = Job(ids=list(ids), max_new=prm["max_new"], sp=prm["sp"], seed=prm["seed"],
                choice=c, stop=prm["stop"],
                emit=lambda event, q=queue: loop.call_soon_threadsafe(q.put_nowait, event))
      out.append((job, queue))
    return out

  def submit(self, pairs) -> None:
    try:
      self.engine.submit([job for job, _ in pairs])
    except QueueFull as e:
      raise APIError(429, f"the server is at capacity ({e}); retry later", None,
                     "rate_limit_exceeded", "rate_limit_exceeded") from None

  @staticmethod
  async def finish(queue: asyncio.Queue) -> dict:
    """Wait for a job's final event; concatenated text."""
    text = []
    while True:
      event = await queue.get()
      if "error" in event:
        raise APIError(500, event["error"], None, "server_error")
      text.append(event["text"])
      if "finish_reason" in event:
        return {**event, "text": "".join(text)}

  async def logprobs(self, ids: list[int], cont: list[int], offset_text: str = "") -> dict:
    """OpenAI `logprobs` of `cont` after `ids` (the first token of a bare sequence gets None)."""
    tok = self.ev.tokenizer
    head, rest = (ids, cont) if ids else (cont[:1], cont[1:])
    lps, tops, top_lps = [], [], []
    if rest:
      async with self._score_lock:
        rec = (await asyncio.to_thread(self.ev.score, [head], [rest]))[0]
      lps, tops, top_lps = list(rec.token_logprobs), rec.top_tokens, rec.top_logprobs
    if not ids:
      lps, tops, top_lps = [None] + lps, [None] + list(tops), [None] + list(top_lps)
    pieces = [tok.decode([t]) for t in cont]
    offsets, pos = [], len(offset_text)
    for piece in pieces:
      offsets.append(pos)
      pos += len(piece)
    return {"tokens": pieces, "token_logprobs": lps, "text_offset": offsets,
            "top_logprobs": [None if t is None else {tok.decode([t]): lp}
                             for t, lp in zip(tops, top_lps)]}


def create_app(server: Server) -> FastAPI:
  app = FastAPI(title="msm serve", docs_url=None, redoc_url=None)
  app.state.server = server

  @app.exception_handler(APIError)
  async def api_error(request: Request, e: APIError):
    return _error_response(e, {"Retry-After": "1"} if e.status == 429 else None)

  async def read_body(request: Request) -> dict:
    try:
      body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as e:
      raise APIError(400, f"the request body is not valid JSON: {e}", None) from None
    if not isinstance(body, dict):
      raise APIError(400, "the request body must be a JSON object", None)
    return body

  @app.get("/v1/models")
  async def models():
    return {"object": "list", "data": [{"id": server.model_name, "object": "model",
                                        "created": server.created, "owned_by": "msm-jax"}]}

  @app.post("/v1/chat/completions")
  async def chat(request: Request):
    body = await read_body(request)
    ids = server.chat_ids(body)
    prm = server.params(body, len(ids), DEFAULT_MAX_TOKENS)
    if body.get("logprobs"):
      raise APIError(400, "'logprobs' is not supported on chat completions; use /v1/completions",
                     "logprobs")
    pairs = server.jobs(ids, prm)
    server.submit(pairs)
    rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "created": created, "model": server.model_name}
    if prm["stream"]:
      async def events():
        try:
          for i, _ in enumerate(pairs):
            yield _sse({**head, "object": "chat.completion.chunk", "choices": [
                {"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})
          async for i, event in _merged(pairs):
            delta = {"content": event["text"]} if event["text"] else {}
            yield _sse({**head, "object": "chat.completion.chunk", "choices": [
                {"index": i, "delta": delta, "finish_reason": event.get("finish_reason")}]})
          yield "data: [DONE]\n\n"
        finally:
          _cancel(pairs)
      return StreamingResponse(events(), media_type="text/event-stream")
    try:
      results = await asyncio.gather(*(server.finish(q) for _, q in pairs))
    finally:
      _cancel(pairs)
    done = sum(r["usage"] for r in results)
    return {**head, "object": "chat.completion", "choices": [
        {"index": i, "message": {"role": "assistant", "content": r["text"]}, "logprobs": None,
         "finish_reason": r["finish_reason"]} for i, r in enumerate(results)],
        "usage": {"prompt_tokens": len(ids), "completion_tokens": done,
                  "total_tokens": len(ids) + done}}

  @app.post("/v1/completions")
  async def completions(request: Request):
    body = await read_body(request)
    prompts = server.completion_prompts(body)
    longest = max(len(ids) for _, ids in prompts)
    prm = server.params(body, longest, 16)  # OpenAI's default max_tokens for completions
    echo = _field(body, "echo", bool, False, why="a boolean")
    logprobs = _field(body, "logprobs", int, None, lambda v: 0 <= v <= 5, "an integer in [0, 5]")
    if prm["stream"] and (echo or logprobs is not None):
      raise APIError(400, "'echo' and 'logprobs' are not supported with 'stream'", "stream")
    rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": rid, "created": created, "model": server.model_name}
    pairs = []
    for _, ids in prompts:
      pairs.extend(server.jobs(ids, {**prm, "max_new": min(prm["max_new"],
                                                           server.max_context - len(ids))})
                   if prm["max_new"] > 0 else [])
    if prm["stream"]:
      server.submit(pairs)
      async def events():
        try:
          async for i, event in _merged(pairs):
            yield _sse({**head, "object": "text_completion", "choices": [
                {"index": i, "text": event["text"], "logprobs": None,
                 "finish_reason": event.get("finish_reason")}]})
          yield "data: [DONE]\n\n"
        finally:
          _cancel(pairs)
      return StreamingResponse(events(), media_type="text/event-stream")
    if pairs:
      server.submit(pairs)
      try:
        results = await asyncio.gather(*(server.finish(q) for _, q in pairs))
      finally:
        _cancel(pairs)
    else:  # max_tokens=0: nothing to generate
      results = [{"text": "", "tokens": [], "usage": 0, "finish_reason": "length"}] * (
          len(prompts) * prm["n"])
    choices, used = [], 0
    for k, r in enumerate(results):
      text, ids = prompts[k // prm["n"]]
      out_text, lp = (text + r["text"]) if echo else r["text"], None
      if logprobs is not None:
        lp = await server.logprobs(ids, list(r["tokens"]))
        if echo:
          pre = await server.logprobs([], ids)
          lp = {key: pre[key] + lp[key] for key in lp}
          lp["text_offset"] = pre["text_offset"] + [o + len(text) for o in lp["text_offset"]]
      used += r["usage"]
      choices.append({"index": k, "text": out_text, "logprobs": lp,
                      "finish_reason": r["finish_reason"]})
    n_prompt = sum(len(ids) for _, ids in prompts)
    return {**head, "object": "text_completion", "choices": choices,
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": used,
                      "total_tokens": n_prompt + used}}

  return app


def _sse(obj: dict) -> str:
  return f"data: {json.dumps(obj)}\n\n"


def _cancel(pairs) -> None:
  for job, _ in pairs:
    job.cancelled.set()


async def _merged(pairs):
  """(choice index, event) from every job as they arrive, until each has finished."""
  waiting = {asyncio.ensure_future(q.get()): i for i, (_, q) in enumerate(pairs)}
  try:
    while waiting:
      done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
      for fut in done:
        i = waiting.pop(fut)
        event = fut.result()
        if "error" in event:
          raise RuntimeError(event["error"])
        yield i, event
        if "finish_reason" not in event:
          waiting[asyncio.ensure_future(pairs[i][1].get())] = i
  finally:
    for fut in waiting:
      fut.cancel()
