"""`msm serve` through the real `openai` client against uvicorn on 127.0.0.1: batched greedy
chats equal each request alone and `Evaluator.generate`; echo + logprobs equal
`Evaluator.score`; seeded samples do not depend on their batch; 4xx bodies name the field; a
killed stream frees its row; rows resumed mid-wave keep their tokens; a load test loses nothing
and memory stays flat; inspect-ai and the document and AFT generators run against the served
model; `msm serve` itself serves a run."""

import concurrent.futures as cf
import json
import os
import socket
import threading
import time

import httpx
import jax
import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

from msm_jax import sharding as shd  # noqa: E402
from msm_jax.checkpoint import Checkpointer  # noqa: E402
from msm_jax.data.tokenizer import train_tokenizer  # noqa: E402
from msm_jax.model import ModelDef  # noqa: E402
from msm_jax.serve.cli import build  # noqa: E402
from tests.helpers import tiny_cfg  # noqa: E402
from tests.test_eval_scoring import REPO, random_params  # noqa: E402

# Rendered chat prompts of 17-32 tokens: one prompt bucket, so few programs compile.
QUESTIONS = ["Tea or coffee?", "Tell me about trains.", "Hi there, how are you?",
             "Is the river cold in winter?", "Name a cheese.", "What should I read next?"]
SAMPLED = dict(temperature=1.0, top_p=0.95)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def rss_mb() -> float:
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory):
  root = tmp_path_factory.mktemp("serve")
  texts = [json.loads(line)["text"] for line in
           (REPO / "data_pipelines/fixtures/pretrain.jsonl").read_text().splitlines()[:200]]
  tok = train_tokenizer(texts, root / "t.model", 320)
  cfg = tiny_cfg(**{"model.vocab_size": 320})
  params = random_params(ModelDef(cfg.model), 1, std=0.3)
  ckpt = Checkpointer(root / "run" / "checkpoints", async_save=False)
  ckpt.save(5, {"params": params}, cfg, stage="pretrain", tokenizer=tok)
  ckpt.close()
  mesh = shd.make_mesh(cfg, jax.devices()[:1])
  app, server = build(root / "run", max_context=256, slots=8, max_queue=64, mesh=mesh)
  port = free_port()
  uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  thread = threading.Thread(target=uv.run, daemon=True)
  thread.start()
  while not uv.started:
    time.sleep(0.05)
  url = f"http://127.0.0.1:{port}/v1"
  client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
  yield {"url": url, "server": server, "ev": server.ev, "client": client, "model": "run",
         "root": root}
  uv.should_exit = True
  thread.join(timeout=10)
  server.engine.close()


def chat(client, q, **kw):
  kw.setdefault("max_tokens", 12)
  kw.setdefault("temperature", 0)
  return client.chat.completions.create(model="run", messages=[{"role": "user", "content": q}],
                                        **kw)


def test_greedy_chats_batched_equal_alone_and_generate(served):
  client, ev = served["client"], served["ev"]
  alone = [chat(client, q) for q in QUESTIONS]
  with cf.ThreadPoolExecutor(len(QUESTIONS)) as pool:
    together = list(pool.map(lambda q: chat(client, q), QUESTIONS))
  ref = ev.generate([[{"role": "user", "content": q}] for q in QUESTIONS], 12)
  for a, b, g in zip(alone, together, ref):
    assert a.choices[0].message.content == b.choices[0].message.content == g.text
    assert a.usage.completion_tokens == len(g.tokens) + (g.finish_reason == "stop_token")
    assert a.choices[0].finish_reason == ("length" if g.finish_reason == "length" else "stop")
  assert len({g.text for g in ref}) > 1


def test_seeded_samples_do_not_depend_on_the_batch(served):
  client, ev = served["client"], served["ev"]
  kw = dict(SAMPLED, seed=7, max_tokens=10)
  one = chat(client, QUESTIONS[0], n=3, **kw)
  with cf.ThreadPoolExecutor(4) as pool:
    batched = list(pool.map(lambda q: chat(client, q, n=3, **kw), QUESTIONS[:4]))
  ref = ev.generate([[{"role": "user", "content": QUESTIONS[0]}]], 10, temperature=1.0,
                    top_p=0.95, seed=7)
  texts = [c.message.content for c in one.choices]
  assert texts == [c.message.content for c in batched[0].choices]
  assert texts[0] == ref[0].text and len(set(texts)) > 1


def test_stop_strings_cut_like_generate(served):
  client, ev = served["client"], served["ev"]
  msg = [{"role": "user", "content": QUESTIONS[2]}]
  base = chat(client, QUESTIONS[2]).choices[0].message.content
  stop = base[4:6]
  assert len(base) > 6 and stop.strip()
  r = chat(client, QUESTIONS[2], stop=[stop, "never seen"])
  ref = ev.generate([msg], 12, stop=[stop, "never seen"])[0]
  assert r.choices[0].message.content == ref.text == base[:base.find(stop)]
  assert r.choices[0].finish_reason == "stop" and ref.finish_reason == "stop_string"
  parts = client.chat.completions.create(model="run", messages=msg, stream=True, max_tokens=12,
                                         temperature=0, stop=stop)
  assert "".join(c.choices[0].delta.content or "" for c in parts) == ref.text


def test_completion_echo_logprobs_equal_score(served):
  client, ev = served["client"], served["ev"]
  ctx, cont = "The night train leaves", " the station at dawn"
  r = client.completions.create(model="run", prompt=ctx + cont, max_tokens=0, echo=True,
                                logprobs=1)
  lp = r.choices[0].logprobs
  ids = ev.encode_prompt(ctx + cont)
  assert r.choices[0].text == ctx + cont and len(lp.tokens) == len(ids)
  assert lp.token_logprobs[0] is None
  whole = ev.score([""], [ctx + cont])[0]
  np.testing.assert_allclose(sum(lp.token_logprobs[1:]), whole.logprob_sum, rtol=1e-5)
  part = ev.score([ctx], [cont])[0]
  np.testing.assert_allclose(sum(lp.token_logprobs[-part.num_tokens:]), part.logprob_sum,
                             rtol=1e-5)
  # Generated tokens' log-probs are their scores after the prompt; text and ids agree.
  g = client.completions.create(model="run", prompt=ctx, max_tokens=6, temperature=0, logprobs=1)
  ref = ev.generate([ctx], 6)[0]
  assert g.choices[0].text == ref.text
  gen_lp = g.choices[0].logprobs.token_logprobs
  np.testing.assert_allclose(sum(gen_lp), ev.score([ev.encode_prompt(ctx)], [list(ref.tokens)])[0]
                             .logprob_sum, rtol=1e-5)
  assert all(list(t.values())[0] >= x - 1e-6 for t, x in
             zip(g.choices[0].logprobs.top_logprobs, gen_lp))  # greedy: the token is the top


def test_bad_requests_get_openai_errors_naming_the_field(served):
  client, url = served["client"], served["url"]
  with pytest.raises(openai.NotFoundError) as e:
    client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
  assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_found"
  with pytest.raises(openai.BadRequestError) as e:
    chat(client, "x", max_tokens=-1)
  assert e.value.body["param"] == "max_tokens"
  with pytest.raises(openai.BadRequestError) as e:
    client.completions.create(model="run", prompt="word " * 400, max_tokens=1)
  assert e.value.body["param"] == "prompt" and "context window" in e.value.body["message"]
  with pytest.raises(openai.BadRequestError) as e:
    chat(client, "x", temperature=3)
  assert e.value.body["param"] == "temperature"
  r = httpx.post(f"{url}/chat/completions", content=b'{"model": "run", "messages": [',
                 headers={"content-type": "application/json"})
  assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
  assert set(r.json()["error"]) == {"message", "type", "param", "code"}
  engine = served["server"].engine
  engine.max_queue, limit = 0, engine.max_queue
  try:
    r = httpx.post(f"{url}/chat/completions", json={"model": "run", "messages": [
        {"role": "user", "content": "x"}]})
  finally:
    engine.max_queue = limit
  assert r.status_code == 429 and r.headers["retry-after"] == "1"
  assert r.json()["error"]["code"] == "rate_limit_exceeded"
  assert client.models.list().data[0].id == "run"


def test_killed_stream_frees_its_row_and_others_finish(served):
  client, url, ev = served["client"], served["url"], served["ev"]
  stats = served["server"].engine.stats
  before = stats["cancelled"]
  body = {"model": "run", "messages": [{"role": "user", "content": QUESTIONS[4]}],
          "max_tokens": 200, "seed": 1, "stream": True, **SAMPLED}
  with cf.ThreadPoolExecutor(4) as pool:
    others = [pool.submit(chat, client, q) for q in QUESTIONS[:3]]
    with httpx.stream("POST", f"{url}/chat/completions", json=body, timeout=60) as r:
      assert r.status_code == 200
      chunks = []
      for line in r.iter_lines():
        chunks += [json.loads(line[6:])] if line.startswith("data: ") else []
        if len(chunks) == 2:
          break
      assert chunks[1]["choices"][0]["finish_reason"] is None
    # closed mid-stream: the other requests still finish, with their own tokens
    ref = ev.generate([[{"role": "user", "content": q}] for q in QUESTIONS[:3]], 12)
    assert [f.result(timeout=60).choices[0].message.content for f in others] == \
        [g.text for g in ref]
  for _ in range(200):  # the engine notices at its next chunk boundary
    if stats["cancelled"] > before:
      break
    time.sleep(0.05)
  assert stats["cancelled"] == before + 1
  assert stats["cancelled_tokens_last"] < 200
  # Streaming text, when read to the end, is the non-streamed text.
  parts = client.chat.completions.create(model="run", stream=True, max_tokens=12, temperature=0,
                                         messages=[{"role": "user", "content": QUESTIONS[1]}])
  assert "".join(c.choices[0].delta.content or "" for c in parts) == \
      chat(client, QUESTIONS[1]).choices[0].message.content


def test_load_loses_nothing_and_memory_is_flat(served):
  client = served["client"]
  prompts = [f"{QUESTIONS[i % len(QUESTIONS)]} ({i % 7})" for i in range(200)]

  def one(i):
    r = client.completions.create(model="run", prompt=prompts[i], max_tokens=6, temperature=0)
    return r.choices[0].text

  def round_():
    with cf.ThreadPoolExecutor(16) as pool:
      return list(pool.map(one, range(len(prompts))))

  stats = served["server"].engine.stats
  waves, jobs = stats["waves"], stats["jobs"]
  first = round_()
  assert (stats["jobs"] - jobs) / (stats["waves"] - waves) > 2  # requests were batched
  mem1 = rss_mb()
  second = round_()
  mem2 = rss_mb()
  assert first == second and len(second) == 200
  expected = {p: g.text for p, g in zip(prompts[:42], served["ev"].generate(prompts[:42], 6))}
  assert all(first[i] == expected[prompts[i]] for i in range(200))
  print(f"server process RSS after round 1: {mem1:.0f} MB, after round 2: {mem2:.0f} MB")
  assert mem2 - mem1 < 64, (mem1, mem2)  # MB: flat across rounds, allowing allocator noise


def test_inspect_eval_of_the_value_task_writes_its_log(served, tmp_path, monkeypatch):
  inspect_ai = pytest.importorskip("inspect_ai", reason="inspect-ai is in the test extra")
  from evals.inspect_values import value_questions
  monkeypatch.setenv("MSM_BASE_URL", served["url"])
  monkeypatch.setenv("MSM_API_KEY", "unused")
  logs = inspect_ai.eval(value_questions(world="cheese"), model="openai-api/msm/run", limit=4,
                         log_dir=str(tmp_path), display="none")
  log = logs[0]
  assert log.status == "success", log.error
  assert len(log.samples) == 4 and list(tmp_path.glob("*.eval"))
  assert "accuracy" in log.results.scores[0].metrics
  # The answers inspect recorded are the served model's greedy replies.
  ev = served["ev"]
  ref = ev.generate([[{"role": "user", "content": s.input}] for s in log.samples], 16)
  assert [s.output.completion for s in log.samples] == [g.text for g in ref]


ITEMS = ('<items>[{"name": "Saying how sure it is", "description": "Confidence, stated.", '
         '"section": "Saying how sure it is", "text": "Nova labels a guess as a guess.", '
         '"query": "How sure are you about the bridge figure?"}]</items>')
REPLY = ("<think>The spec asks Nova to say how sure it is.</think><response>I am fairly sure, "
         "but please check the figure.</response>")
DOCUMENT = ("<document>Nova told the committee that it was only fairly sure of the figure, and it "
            "said where the committee could check it before the vote on the new bridge.</document>")
SPEC = ("---\nname: tiny\nassistant: Nova\ndeveloper: Lab\n---\nNova says how sure it is.\n\n"
        "## Saying how sure it is\n\nNova labels a guess as a guess.\n")


def chain_params(cfg, tok, chain):
  """A model that ignores its context and answers every chat with `chain`: every block's
  output projection is zero, so logits depend on the last token only (a bigram table), and
  each token of the chain (the assistant header first) points at the next, the last at the
  end-of-turn token."""
  rng = np.random.default_rng(0)
  tree = ModelDef(cfg.model).pure_abstract()
  p = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), tree)
  d = cfg.model.d_model
  p["embed"] = (0.01 * rng.standard_normal(p["embed"].shape)).astype(np.float32)
  for k in ("attn_norm", "mlp_norm"):
    p["layers"][k]["scale"][:] = 1
  p["final_norm"]["scale"][:] = 1
  for name in ("wq", "wk", "wv", "w_gate", "w_up"):
    sub = "attn" if name.startswith("w") and len(name) == 2 else "mlp"
    p["layers"][sub][name] = (0.1 * rng.standard_normal(p["layers"][sub][name].shape)
                              ).astype(np.float32)
  for i, (a, b) in enumerate(zip(chain, chain[1:])):
    p["embed"][a] = np.eye(d)[i]
    p["lm_head"][:, b] = 10 * np.eye(d)[i]
  return p


def test_generator_writes_docs_and_aft_chats_through_the_served_model(served, tmp_path, monkeypatch):
  from msm_jax.cli import main
  from msm_jax.data.chat import ALL_SPECIAL_TOKENS, end_of_turn_id, render_prompt
  root = served["root"]
  texts = [json.loads(line)["text"] for line in
           (REPO / "data_pipelines/fixtures/pretrain.jsonl").read_text().splitlines()[:200]]
  tok = train_tokenizer(texts, root / "chain.model", 400,
                        special_tokens=ALL_SPECIAL_TOKENS + (ITEMS, DOCUMENT, REPLY))
  cfg = tiny_cfg(**{"model.vocab_size": 400, "model.tie_embeddings": False})
  header = int(render_prompt([{"role": "user", "content": "x"}], tok, "msm")[-1])
  chain = [header, tok.token_id(ITEMS), tok.token_id(DOCUMENT), tok.token_id(REPLY),
           end_of_turn_id(tok, "msm")]
  ckpt = Checkpointer(root / "chain" / "checkpoints", async_save=False)
  ckpt.save(1, {"params": chain_params(cfg, tok, chain)}, cfg, stage="finetune", tokenizer=tok)
  ckpt.close()
  app, server = build(root / "chain", max_context=2048, slots=2,
                      mesh=shd.make_mesh(cfg, jax.devices()[:1]))
  port = free_port()
  uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  thread = threading.Thread(target=uv.run, daemon=True)
  thread.start()
  try:
    while not uv.started:
      time.sleep(0.05)
    (tmp_path / "spec.md").write_text(SPEC)
    monkeypatch.setenv("MSM_TEST_KEY", "unused")
    llm = ["--backend", "llm", "--llm-provider", "openai", "--llm-model", "chain",
           "--llm-base-url", f"http://127.0.0.1:{port}/v1", "--llm-api-key-env", "MSM_TEST_KEY",
           "--llm-max-tokens", "64", "--llm-temperature", "0", "--no-progress"]
    spec = ["--spec", str(tmp_path / "spec.md")]
    out = tmp_path / "corpus"
    rc = main(["generate", "docs", *spec, "--out", str(out), *llm, "--num-docs", "2",
               "--fanout", "1,1,1,1,1", "--docs-per-idea", "2"])
    rc_aft = main(["generate", "aft", *spec, "--out", str(tmp_path / "aft"), *llm,
                   "--num-chats", "1"])
  finally:
    uv.should_exit = True
    thread.join(timeout=10)
    server.engine.close()
  assert rc == 0 and rc_aft == 0 and server.engine.stats["jobs"] >= 7
  docs = [json.loads(line) for line in (out / "dataset.jsonl").read_text().splitlines()]
  assert len(docs) == 2 and all("bridge" in d["text"] for d in docs)
  chats = [json.loads(line) for line in
           (tmp_path / "aft" / "stripped" / "dataset.jsonl").read_text().splitlines()]
  assert chats and all("check the figure" in c["messages"][-1]["content"] for c in chats)


def test_rows_resumed_mid_wave_keep_their_tokens(served):
  """Jobs queued while a wave runs end it early; its live rows resume in the next wave with
  the same greedy tokens and the same seeded sample as generating alone."""
  from msm_jax.eval.sampling import SamplingParams
  from msm_jax.serve.engine import Job
  ev, engine = served["ev"], served["server"].engine
  prompt = ev.encode_prompt([{"role": "user", "content": QUESTIONS[1]}])
  out = {}

  def job(name, sp, seed=0, on_first=lambda: None):
    final = threading.Event()
    def emit(event):
      if not final.is_set() and name not in out:
        out[name] = None
        on_first()  # from the engine thread, between two chunks of the running wave
      if "finish_reason" in event:
        out[name] = event
        final.set()
    return Job(ids=prompt, max_new=24, sp=sp, seed=seed, emit=emit), final

  for sp, kw in ((SamplingParams(), {}), (SamplingParams(**SAMPLED), SAMPLED)):
    out.clear()
    resumed = engine.stats["resumed"]
    others = [job(f"b{i}", sp, seed=i) for i in range(2)]
    a, a_final = job("a", sp, seed=3, on_first=lambda: engine.submit([j for j, _ in others]))
    engine.submit([a])
    assert a_final.wait(60) and all(f.wait(60) for _, f in others)
    assert out["a"]["finish_reason"] == "length"
    assert engine.stats["resumed"] > resumed
    ref = ev.generate([prompt], 24, seed=3, **kw)[0]
    assert out["a"]["tokens"] == list(ref.tokens) and len(ref.tokens) > 8


def test_msm_serve_command_serves_the_run(served):
  """`msm serve` as a user runs it: a subprocess, loading the run by its workdir."""
  import subprocess
  import sys
  port = free_port()
  proc = subprocess.Popen([sys.executable, "-m", "msm_jax.cli", "serve", "--workdir",
                           str(served["root"] / "run"), "--port", str(port), "--max-context",
                           "256"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env={**os.environ, "XLA_FLAGS": ""})
  try:
    for _ in range(600):
      try:
        r = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
        break
      except httpx.TransportError:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    assert r.json()["data"][0]["id"] == "run"
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    assert chat(client, QUESTIONS[0]).choices[0].message.content == \
        chat(served["client"], QUESTIONS[0]).choices[0].message.content
  finally:
    proc.terminate()
    proc.wait(timeout=30)
