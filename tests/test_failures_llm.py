"""The LLM backend against local stand-ins (issue 17): a refused port fails fast naming the
URL, no empty dataset is written as output, and provider URLs come out right for a base URL
given with or without `/v1`."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from data_pipelines.docgen import DocumentGenerator, GenerationError, Plan
from data_pipelines.llm_backend import LLMBackend
from data_pipelines.llm_client import LLMClient, LLMConfig, LLMError, Unreachable, endpoint_url
from data_pipelines.spec import load_spec
from tests.test_gen_llm import FakeLLM

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "data_pipelines" / "specs" / "honest_uncertainty.md"


@pytest.fixture
def refused_url():
  """A port on 127.0.0.1 that nothing listens on: bound, then closed."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  return f"http://127.0.0.1:{port}"


def test_refused_connection_gives_up_after_two_quick_retries(refused_url, tmp_path):
  client = LLMClient(LLMConfig(provider="openai", base_url=refused_url, max_retries=6),
                     environ={})
  with pytest.raises(Unreachable, match=f"cannot reach {refused_url}/v1/chat/completions"):
    client.complete("hello")
  assert client.stats["requests"] == 3 and client.stats["retries"] == 2  # not 7 with backoff
  with pytest.raises(Unreachable):  # the next request does not try again
    client.complete("another prompt")
  assert client.stats["requests"] == 3


def test_generate_against_a_refused_port_is_one_line_and_writes_no_dataset(refused_url,
                                                                           tmp_path):
  out = tmp_path / "out"
  run = subprocess.run(
      [sys.executable, "-m", "msm_jax.cli", "generate", "docs", "--spec", str(SPEC), "--out",
       str(out), "--backend", "llm", "--llm-provider", "openai", "--llm-base-url", refused_url,
       "--num-docs", "8", "--no-progress"], cwd=REPO, capture_output=True, text=True,
      timeout=120)
  assert run.returncode == 2, run.stderr
  lines = run.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(
      f"msm: error: cannot reach {refused_url}/v1/chat/completions"), run.stderr
  assert not (out / "dataset.jsonl").exists()


def test_every_request_failing_writes_no_dataset(tmp_path):
  server = FakeLLM(fault_every=10**6, fail_if=lambda prompt: True)  # HTTP 500 for everything
  try:
    client = LLMClient(LLMConfig(provider="openai", base_url=server.url, max_retries=0,
                                 concurrency=2), environ={})
    spec = load_spec(SPEC)
    gen = DocumentGenerator(spec, tmp_path, LLMBackend(spec, client), Plan.for_count(4), 4,
                            progress=False)
    with pytest.raises(GenerationError, match="no documents generated.*failures.json"):
      gen.run()
  finally:
    server.close()
  assert not (tmp_path / "dataset.jsonl").exists()
  assert (tmp_path / "failures.json").exists()


@pytest.mark.parametrize("provider, path", [("anthropic", "/v1/messages"),
                                            ("openai", "/v1/chat/completions")])
def test_either_form_of_base_url_reaches_the_provider_path(provider, path):
  server = FakeLLM(fault_every=10**6)
  try:
    for base in (server.url, server.url + "/", server.url + "/v1", server.url + "/v1/"):
      client = LLMClient(LLMConfig(provider=provider, base_url=base, max_retries=0),
                         environ={"ANTHROPIC_API_KEY": "k"})
      assert client.complete("Say something.")  # a wrong path is a 404: LLMError
    assert [r["path"] for r in server.requests] == [path] * 4
  finally:
    server.close()


def test_endpoint_url_keeps_other_paths():
  assert endpoint_url("openai", "https://g.example/v1beta/openai") == \
      "https://g.example/v1beta/openai/chat/completions"
  assert endpoint_url("anthropic", "https://api.anthropic.com") == \
      "https://api.anthropic.com/v1/messages"
  assert issubclass(Unreachable, LLMError)
