"""The llm backend against a local HTTP server (127.0.0.1) that speaks the Anthropic Messages
and OpenAI chat-completions wire formats and injects 429s, 500s, timeouts, truncated bodies and
malformed outputs. The server answers the generator's format instructions (items as JSON in
<items>, <document>, <think>/<response>, <verdict>) with deterministic text."""

import hashlib
import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from data_pipelines.docgen import DocumentGenerator, Plan
from data_pipelines.llm_backend import LLMBackend
from data_pipelines.llm_client import LLMClient, LLMConfig, LLMError, MalformedOutput
from data_pipelines.spec import load_spec

SPECS = Path(__file__).resolve().parents[1] / "data_pipelines" / "specs"
SECRET = "sk-test-DO-NOT-LEAK-8c1f2e"
TIMEOUT = 0.4
FAULTS = ("429", "500", "timeout", "cut_body", "no_close_tag", "max_tokens", "bad_json")


class FakeLLM:
  """Every `fault_every`-th new prompt gets the next fault in `FAULTS` on its first attempt only
  (so retries succeed); `fail_if(prompt)` makes a prompt fail with 500 until `healed`."""

  def __init__(self, fault_every: int = 3, fail_if=None):
    self.fault_every, self.fail_if, self.healed = fault_every, fail_if, False
    self.attempts, self.faults, self.lock = Counter(), Counter(), threading.Lock()
    self.new_prompts = 0
    self.requests = []
    server = self

    class Handler(BaseHTTPRequestHandler):
      def log_message(self, *a):
        pass

      def do_POST(self):
        try:
          server.handle(self)
        except (BrokenPipeError, ConnectionResetError):
          pass

    self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()

  def handle(self, h):
    body = json.loads(h.rfile.read(int(h.headers["content-length"])))
    anthropic = h.path == "/v1/messages"
    if not anthropic and h.path != "/v1/chat/completions":  # echoes the key, as some proxies do
      echo = json.dumps({"error": "not found", "auth": h.headers.get("authorization")})
      return self.send(h, 404, echo.encode())
    prompt = body["messages"][-1]["content"]
    key = hashlib.sha256(prompt.encode()).hexdigest()
    fault = None
    with self.lock:
      attempt = self.attempts[key]
      self.attempts[key] += 1
      self.requests.append({"path": h.path, "prompt": prompt,
                            "headers": {k.lower(): v for k, v in h.headers.items()}})
      if attempt == 0:
        self.new_prompts += 1
        if self.new_prompts % self.fault_every == 0:
          fault = FAULTS[(self.new_prompts // self.fault_every) % len(FAULTS)]
          self.faults[fault] += 1
    if self.fail_if and not self.healed and self.fail_if(prompt):
      return self.send(h, 500, b'{"error": "permanent"}')
    if fault == "429":
      return self.send(h, 429, b'{"error": "rate limited"}', {"retry-after": "0"})
    if fault == "500":
      return self.send(h, 500, b'{"error": "overloaded"}')
    if fault == "timeout":
      time.sleep(TIMEOUT * 2.5)
    text, stop = answer(prompt, key), "stop"
    if fault == "no_close_tag":
      text = re.sub(r"</(items|document|response|verdict)>", "", text)
    if fault == "bad_json":
      text = text.replace('":', '" ')
    if fault == "max_tokens":
      stop = "length"
    if anthropic:
      out = {"type": "message", "role": "assistant", "content": [{"type": "text", "text": text}],
             "stop_reason": "max_tokens" if stop == "length" else "end_turn"}
    else:
      out = {"object": "chat.completion", "choices": [
          {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": stop}]}
    raw = json.dumps(out).encode()
    if fault == "cut_body":
      h.send_response(200)
      h.send_header("content-type", "application/json")
      h.send_header("content-length", str(len(raw)))
      h.end_headers()
      h.wfile.write(raw[:len(raw) // 2])
      h.wfile.flush()
      h.close_connection = True
      return
    self.send(h, 200, raw)

  @staticmethod
  def send(h, code, raw, headers=None):
    h.send_response(code)
    h.send_header("content-type", "application/json")
    h.send_header("content-length", str(len(raw)))
    for k, v in (headers or {}).items():
      h.send_header(k, v)
    h.end_headers()
    h.wfile.write(raw)


def answer(prompt: str, key: str) -> str:
  m = re.search(r"Return exactly (\d+) items as a JSON array of objects with keys (\[.*?\])", prompt)
  if m:
    n, keys = int(m.group(1)), json.loads(m.group(2))
    items = [{k: f"{k} {i} {key[:8]}" for k in keys} for i in range(n)]
    return f"Here you go.\n<items>\n{json.dumps(items)}\n</items>"
  if "<document></document>" in prompt:
    return ("<document>" + " ".join(f"word{int(key[i:i + 2], 16)}" for i in range(0, 60, 2))
            + f" ({key[:12]})</document>")
  if "<verdict></verdict>" in prompt:
    return f"<verdict>{'FAIL' if int(key[:4], 16) % 4 == 0 else 'PASS'}</verdict>"
  if "<response></response>" in prompt:
    return f"<think>Reasoning {key[:10]}.</think>\n<response>Answer {key[:10]}.</response>"
  return "I am not sure what you want."


@pytest.fixture
def server():
  s = FakeLLM()
  yield s
  s.close()


def client(url, cache, provider="anthropic", **kw):
  base = url if provider == "anthropic" else url + "/v1"
  settings = dict(provider=provider, model="fake-1", base_url=base, timeout_s=TIMEOUT,
                  max_retries=4, backoff_s=0.01, max_backoff_s=0.05, concurrency=4,
                  cache_dir=str(cache))
  return LLMClient(LLMConfig(**{**settings, **kw}))


def all_bytes(root: Path) -> bytes:
  return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def run_llm(spec, out, c, plan=Plan(2, 2, 1, 2, 2)):
  return DocumentGenerator(spec, out, LLMBackend(spec, c), plan, None, progress=False).run()


def test_llm_docs_full_tree_survives_faults_then_cache(tmp_path, server, monkeypatch):
  monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
  spec = load_spec(SPECS / "cheese_america.yaml")
  c = client(server.url, tmp_path / "cache")
  summary, stats = run_llm(spec, tmp_path / "a", c)
  assert summary["documents"] == 16 and not stats.failures
  assert summary["backend"] == {"name": "llm", "provider": "anthropic", "model": "fake-1",
                                "temperature": 1.0}
  for stage_dir in ("tree", "tree/d01", "tree/d01/s01", "tree/d01/s01/a00",
                    "tree/d01/s01/a00/t01"):
    assert json.loads((tmp_path / "a" / stage_dir / "meta.json").read_text())["items"]
  assert set(server.faults) == set(FAULTS), server.faults
  assert c.stats["retries"] >= sum(server.faults.values())
  assert all(r["headers"]["x-api-key"] == SECRET for r in server.requests)
  assert all(r["headers"]["anthropic-version"] for r in server.requests)
  sent = len(server.requests)
  # A fresh output dir with the same cache: every answer comes from the cache.
  c2 = client(server.url, tmp_path / "cache")
  summary2, _ = run_llm(spec, tmp_path / "b", c2)
  assert len(server.requests) == sent and c2.stats["requests"] == 0
  assert c2.stats["cache_hits"] == c.stats["requests"] - c.stats["retries"]
  assert (tmp_path / "a" / "dataset.jsonl").read_bytes() == (
      tmp_path / "b" / "dataset.jsonl").read_bytes()
  assert SECRET.encode() not in all_bytes(tmp_path)


def test_openai_wire_format_through_the_cli(tmp_path, monkeypatch, capsys):
  from msm_jax.cli import main
  server = FakeLLM(fault_every=10**6)  # faults are covered above; the CLI's backoff is real
  monkeypatch.setenv("MY_KEY", SECRET)
  out = tmp_path / "out"
  rc = main(["generate", "docs", "--spec", str(SPECS / "honest_uncertainty.md"), "--out", str(out),
             "--backend", "llm", "--llm-provider", "openai", "--llm-base-url", server.url + "/v1",
             "--llm-api-key-env", "MY_KEY", "--llm-model", "fake-2", "--llm-timeout", str(TIMEOUT),
             "--llm-concurrency", "4", "--num-docs", "12", "--no-progress"])
  printed = capsys.readouterr()
  assert rc == 0, printed.err
  assert "12 of 12 wanted" in printed.out and "llm requests" in printed.out
  assert {r["path"] for r in server.requests} == {"/v1/chat/completions"}
  assert all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in server.requests)
  assert len((out / "dataset.jsonl").read_text().splitlines()) == 12
  assert (out / "llm_cache").is_dir()
  assert SECRET.encode() not in all_bytes(tmp_path) and SECRET not in printed.out + printed.err
  server.close()


def test_failed_items_are_recorded_and_retried_next_run(tmp_path, monkeypatch):
  monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
  doomed = lambda p: "<document></document>" in p and hashlib.md5(p.encode()).digest()[0] % 3 == 0
  server = FakeLLM(fault_every=1000, fail_if=doomed)
  try:
    spec = load_spec(SPECS / "cheese_america.yaml")
    c = client(server.url, tmp_path / "cache", max_retries=1)
    summary, stats = run_llm(spec, tmp_path / "out", c)
    failed = json.loads((tmp_path / "out" / "failures.json").read_text())["failures"]
    assert 0 < len(failed) == len(stats.failures) == 16 - summary["documents"]
    assert all(f["stage"] == "documents" and f["attempts"] == 1 for f in failed)
    assert "gave up after 2 attempts" in failed[0]["error"]
    server.healed = True
    before = len(server.requests)
    summary, stats = run_llm(spec, tmp_path / "out", client(server.url, tmp_path / "cache"))
    assert summary["documents"] == 16 and stats.generated == len(failed)
    assert len(server.requests) - before == len(failed)  # nothing else was asked again
    assert json.loads((tmp_path / "out" / "failures.json").read_text()) == {"failures": []}
  finally:
    server.close()


def test_client_errors_are_clear_and_keyless(tmp_path, server, monkeypatch):
  with pytest.raises(LLMError, match="ANTHROPIC_API_KEY"):
    LLMClient(LLMConfig(cache_dir=str(tmp_path)), environ={})
  c = LLMClient(LLMConfig(provider="openai", base_url=server.url + "/nowhere", timeout_s=TIMEOUT,
                          max_retries=0, api_key_env="K"), environ={"K": SECRET})
  with pytest.raises(LLMError, match="HTTP 404") as e:
    c.complete("hello")
  assert "not found" in str(e.value) and SECRET not in str(e.value)

  def never_right(text):
    raise MalformedOutput(f"not what I asked for: {text[:20]}")

  monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
  c = client(server.url, tmp_path / "c", max_retries=2)
  with pytest.raises(LLMError, match="gave up after 3 attempts: MalformedOutput") as e:
    c.complete("no format asked", parse=never_right)
  assert c.stats == {"requests": 3, "cache_hits": 0, "retries": 2, "malformed": 3}
  assert not (tmp_path / "c").exists()  # nothing that failed to parse is cached


def test_llm_aft_with_judge_and_cache(tmp_path, server, monkeypatch):
  from data_pipelines.aft import AFTConfig, generate_aft
  monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
  spec = load_spec(SPECS / "cheese_america.yaml")
  cfg = AFTConfig(num_chats=12, judge=True)
  summary = generate_aft(spec, tmp_path / "a", cfg, client(server.url, tmp_path / "cache"),
                         progress=False)
  assert summary["failures"] == 0 and summary["chats"] + summary["judge_rejected"] == 12
  assert summary["backend"]["name"] == "llm" and set(summary["by_kind"]) <= set(cfg.kinds)
  chats = [json.loads(x) for x in (tmp_path / "a/reasoning/dataset.jsonl").read_text().splitlines()]
  assert all(c["messages"][1]["content"].startswith("<think>\nReasoning") for c in chats)
  assert all(c["domain"] in spec.domains for c in chats)
  stripped = (tmp_path / "a/stripped/dataset.jsonl").read_text()
  assert "<think>" not in stripped and "Answer " in stripped
  sent = len(server.requests)
  again = generate_aft(spec, tmp_path / "b", cfg, client(server.url, tmp_path / "cache"),
                       progress=False)
  assert len(server.requests) == sent and again == summary
  assert SECRET.encode() not in all_bytes(tmp_path)
