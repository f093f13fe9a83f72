"""A small, dependable client for LLM chat APIs: Anthropic Messages and OpenAI-compatible.

- Wire formats: `POST {host}/v1/messages` (x-api-key, anthropic-version) and
  `POST {base}/chat/completions` (Bearer token); see `endpoint_url` for either form of base URL.
- Retries with exponential backoff and jitter on 429 (honouring Retry-After), 5xx, timeouts,
  dropped connections, truncated or unparsable bodies, outputs cut off at `max_tokens`, and
  outputs the caller's `parse` rejects (`MalformedOutput`: missing closing tag, invalid JSON).
  A refused connection or a host that does not resolve gets only `connect_retries` quick retries,
  then `Unreachable` names the URL, and every later request fails at once: no run waits out a
  minute of backoff per request against a server that is not there.
- An on-disk cache keyed by the request (provider, model, system, prompt, sampling settings;
  not the URL or key) holding only outputs that parsed, so reruns and resumed runs are free.
- Bounded concurrency: at most `concurrency` requests in flight, whatever the caller's threads.
- The API key is read from the environment, sent only in its header, and scrubbed from every
  error message; it is never written to the cache or to logs.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from msm_io.files import atomic_write_json, read_json

DEFAULTS = {
    "anthropic": {"base_url": "https://api.anthropic.com", "key_env": "ANTHROPIC_API_KEY",
                  "model": "claude-sonnet-4-5"},
    "openai": {"base_url": "https://api.openai.com/v1", "key_env": "OPENAI_API_KEY",
               "model": "gpt-4o-mini"},
}
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}


class LLMError(RuntimeError):
  """A request that cannot succeed (bad key, bad request) or ran out of retries."""


class Unreachable(LLMError):
  """The endpoint refused the connection or its host does not resolve: fatal for the run."""


class MalformedOutput(ValueError):
  """The model answered, but not in the shape asked for; worth another try."""


class Truncated(MalformedOutput):
  """The output stopped early (token limit, missing closing tag)."""


class _Retryable(Exception):
  def __init__(self, msg: str, retry_after: float | None = None):
    super().__init__(msg)
    self.retry_after = retry_after


class _Refused(Exception):
  pass


def endpoint_url(provider: str, base_url: str) -> str:
  """The request URL for `base_url` given with or without its `/v1`: Anthropic's is
  `{host}/v1/messages`; an OpenAI-compatible one is `{base}/chat/completions`, with `/v1`
  added when the base is a bare host (a base with another path, e.g. `.../v1beta/openai`, is
  used as given)."""
  base = base_url.rstrip("/")
  path = urllib.parse.urlsplit(base).path
  if provider == "anthropic":
    return (base[:-len("/v1")] if path.endswith("/v1") else base) + "/v1/messages"
  return (base + "/v1" if not path else base) + "/chat/completions"


@dataclass
class LLMConfig:
  provider: str = "anthropic"  # anthropic | openai (any OpenAI-compatible endpoint)
  model: str = ""
  base_url: str = ""
  api_key_env: str = ""
  max_tokens: int = 4096
  temperature: float = 1.0
  timeout_s: float = 120.0
  max_retries: int = 6
  connect_retries: int = 2  # for a refused connection / unknown host, with connect_backoff_s
  connect_backoff_s: float = 0.25
  backoff_s: float = 1.0
  max_backoff_s: float = 60.0
  concurrency: int = 8
  cache_dir: str = ""

  def __post_init__(self):
    if self.provider not in DEFAULTS:
      raise ValueError(f"unknown provider {self.provider!r}; use one of {sorted(DEFAULTS)}")
    d = DEFAULTS[self.provider]
    self.model = self.model or d["model"]
    self.base_url = (self.base_url or d["base_url"]).rstrip("/")
    self.api_key_env = self.api_key_env or d["key_env"]

  def identity(self) -> dict:
    """The settings that shape outputs (recorded with generated data; no secrets)."""
    return {"provider": self.provider, "model": self.model, "temperature": self.temperature}


class LLMClient:

  def __init__(self, config: LLMConfig, environ: dict | None = None):
    self.config = config
    env = os.environ if environ is None else environ
    self._key = env.get(config.api_key_env, "")
    if not self._key and config.provider == "anthropic":
      raise LLMError(f"set {config.api_key_env} in the environment to use the Anthropic API")
    self._slots = threading.BoundedSemaphore(max(1, config.concurrency))
    self._lock = threading.Lock()
    self.stats = {"requests": 0, "cache_hits": 0, "retries": 0, "malformed": 0}
    self.cache_dir = Path(config.cache_dir) if config.cache_dir else None
    self.url = endpoint_url(config.provider, config.base_url)
    self._unreachable = ""  # set once the endpoint refused: every later request fails at once

  # --- public ----------------------------------------------------------------------------
  def complete(self, prompt: str, system: str = "", parse: Callable[[str], Any] = lambda t: t,
               max_tokens: int | None = None) -> Any:
    """Sends one user turn; returns `parse(text)`. Raises LLMError when retries run out."""
    request = {"provider": self.config.provider, "model": self.config.model, "system": system,
               "prompt": prompt, "max_tokens": max_tokens or self.config.max_tokens,
               "temperature": self.config.temperature}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    cached = self._cache_get(key)
    if cached is not None:
      try:
        result = parse(cached)
        self._count("cache_hits")
        return result
      except MalformedOutput:
        pass  # a parser got stricter since; ask again
    last, refused = "no attempt made", 0
    for attempt in range(self.config.max_retries + 1):
      if self._unreachable:
        raise Unreachable(self._unreachable)
      if attempt:
        self._count("retries")
      retry_after = None
      try:
        text, stop = self._send(request)
        if stop in ("max_tokens", "length"):
          raise Truncated(f"output stopped at the token limit ({stop})")
        result = parse(text)
        self._cache_put(key, request, text)
        return result
      except MalformedOutput as e:
        self._count("malformed")
        last = f"{type(e).__name__}: {e}"
      except _Retryable as e:
        last, retry_after = str(e), e.retry_after
      except _Refused as e:
        refused += 1
        if refused > self.config.connect_retries:
          self._unreachable = self._redact(
              f"cannot reach {self.url}: {e} (after {refused} tries; is the server running and "
              "--llm-base-url right?)")
          raise Unreachable(self._unreachable) from None
        time.sleep(self.config.connect_backoff_s * 2 ** (refused - 1))
        continue
      if attempt < self.config.max_retries:
        time.sleep(self._backoff(attempt, retry_after))
    raise LLMError(self._redact(f"gave up after {self.config.max_retries + 1} attempts: {last}"))

  # --- HTTP ------------------------------------------------------------------------------
  def _send(self, request: dict) -> tuple[str, str]:
    cfg = self.config
    url = self.url
    if cfg.provider == "anthropic":
      headers = {"x-api-key": self._key, "anthropic-version": "2023-06-01"}
      body = {"model": cfg.model, "max_tokens": request["max_tokens"],
              "temperature": request["temperature"],
              "messages": [{"role": "user", "content": request["prompt"]}]}
      if request["system"]:
        body["system"] = request["system"]
    else:
      headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
      messages = [{"role": "system", "content": request["system"]}] if request["system"] else []
      body = {"model": cfg.model, "max_tokens": request["max_tokens"],
              "temperature": request["temperature"],
              "messages": messages + [{"role": "user", "content": request["prompt"]}]}
    headers["content-type"] = "application/json"
    req = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with self._slots:
      self._count("requests")
      try:
        with urllib.request.urlopen(req, timeout=cfg.timeout_s) as resp:
          raw = resp.read()
      except urllib.error.HTTPError as e:
        detail = self._redact(_snippet(e))
        if e.code in RETRY_STATUS:
          raise _Retryable(f"HTTP {e.code}: {detail}", _retry_after(e.headers)) from None
        raise LLMError(f"HTTP {e.code} from {url}: {detail}") from None
      except (TimeoutError, ConnectionError, urllib.error.URLError, http.client.HTTPException,
              OSError) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
          raise _Refused(self._redact(f"{type(reason).__name__}: {reason}")) from None
        raise _Retryable(self._redact(f"{type(e).__name__}: {e}")) from None
    try:
      data = json.loads(raw)
      if cfg.provider == "anthropic":
        text = "".join(b.get("text", "") for b in data["content"] if b.get("type") == "text")
        return text, data.get("stop_reason") or ""
      choice = data["choices"][0]
      text = choice["message"]["content"]
      if not isinstance(text, str):
        raise TypeError("message content is not text")
      return text, choice.get("finish_reason") or ""
    except (ValueError, KeyError, IndexError, TypeError) as e:
      raise _Retryable(f"unreadable response body ({type(e).__name__})") from None

  def _backoff(self, attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
      return min(self.config.max_backoff_s, retry_after)
    base = min(self.config.max_backoff_s, self.config.backoff_s * 2 ** attempt)
    return base * (0.5 + random.random() / 2)

  # --- cache and bookkeeping -------------------------------------------------------------
  def _cache_path(self, key: str) -> Path | None:
    return self.cache_dir / key[:2] / f"{key}.json" if self.cache_dir else None

  def _cache_get(self, key: str) -> str | None:
    path = self._cache_path(key)
    entry = read_json(path) if path else None
    return entry.get("text") if isinstance(entry, dict) else None

  def _cache_put(self, key: str, request: dict, text: str) -> None:
    path = self._cache_path(key)
    if path:
      atomic_write_json(path, {"request": request, "text": text})

  def _count(self, name: str) -> None:
    with self._lock:
      self.stats[name] += 1

  def _redact(self, text: str) -> str:
    return text.replace(self._key, "[redacted]") if self._key else text


def _snippet(e: urllib.error.HTTPError) -> str:
  try:
    return e.read()[:300].decode("utf-8", "replace")
  except Exception:
    return ""


def _retry_after(headers) -> float | None:
  try:
    return max(0.0, float(headers.get("retry-after")))
  except (TypeError, ValueError):
    return None
