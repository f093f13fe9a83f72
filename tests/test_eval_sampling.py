"""Sampling: greedy KV-cache generation == greedy decoding by full recomputation, token for
token, for left-padded prompts of mixed lengths on 1 and 8 devices; stops, limits, seeds and the
top-k / top-p filters."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msm_jax import sharding as shd
from msm_jax.data.tokenizer import train_tokenizer
from msm_jax.eval import Evaluator, SamplingParams
from msm_jax.eval.sampling import filter_logits
from msm_jax.model import ModelDef
from tests.helpers import tiny_cfg
from tests.test_eval_scoring import REPO, random_params

PROMPTS = ["The night train leaves", "Nova", "Floods spread fresh mud over the fields each",
           "Passengers read, sleep, or"]


@pytest.fixture(scope="module")
def ev(tmp_path_factory):
  texts = [json.loads(line)["text"] for line in
           (REPO / "data_pipelines/fixtures/pretrain.jsonl").read_text().splitlines()[:200]]
  tok = train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "t.model", 320)
  cfg = tiny_cfg(**{"model.vocab_size": 320})
  params = random_params(ModelDef(cfg.model), 1, std=0.3)
  return Evaluator(cfg, params, tok, shd.make_mesh(cfg, jax.devices()[:1]), batch_size=4)


def greedy_by_recomputation(ev, apply, prompt_ids, n):
  """Each step: one unpadded forward pass over the whole sequence so far, argmax at the end
  (with the ids the sampler never draws, padding and BOS, excluded)."""
  seq = list(prompt_ids)
  banned = {ev.tokenizer.pad_id, ev.tokenizer.bos_id}
  stops = set(ev.sampler.stop_ids)
  out = []
  for _ in range(n):
    buf = np.zeros((1, 64), np.int32)  # right padding: causal, so invisible to real tokens
    buf[0, :len(seq)] = seq
    seg = (np.arange(64) < len(seq)).astype(np.int32)[None]
    logits = np.array(apply(ev.params, buf, np.arange(64)[None], seg)[0])[0, len(seq) - 1]
    logits[[i for i in banned if i not in stops]] = -np.inf
    logits[ev.tokenizer.vocab_size:] = -np.inf
    tok = int(np.argmax(logits))
    if tok in stops:
      break
    out.append(tok)
    seq.append(tok)
  return out


def test_greedy_kv_cache_equals_full_recomputation(ev):
  n = 12
  cached = ev.generate(PROMPTS, n)
  full = ev.generate(PROMPTS, n, use_cache=False)
  apply = jax.jit(ev.model_def.apply)
  for p, c, f in zip(PROMPTS, cached, full):
    ref = greedy_by_recomputation(ev, apply, ev.encode_prompt(p), n)
    assert list(c.tokens) == ref == list(f.tokens)
    assert c.text == ev.tokenizer.decode(ref)
  assert len({len(ev.encode_prompt(p)) for p in PROMPTS}) == len(PROMPTS)  # mixed lengths


def test_generation_on_8_devices_matches_1(ev):
  cfg = tiny_cfg(**{"model.vocab_size": 320})
  cfg.mesh.update(data=2, fsdp=2, tensor=2)
  ev8 = Evaluator(cfg, jax.device_get(ev.params), ev.tokenizer, shd.make_mesh(cfg), batch_size=4)
  assert [g.tokens for g in ev8.generate(PROMPTS, 8)] == \
      [g.tokens for g in ev.generate(PROMPTS, 8)]


def test_stops_and_per_prompt_limits(ev):
  base = ev.generate(PROMPTS, 10)
  limited = ev.generate(PROMPTS, [1, 3, 0, 10])
  assert [len(g.tokens) for g in limited] == [1, 3, 0, len(base[3].tokens)]
  assert all(list(g.tokens) == list(b.tokens[:len(g.tokens)]) for g, b in zip(limited, base))
  assert limited[0].finish_reason == "length"
  # A stop string taken from the greedy text cuts there, and only that prompt stops early.
  stop = base[1].text[3:5]
  cut = ev.generate(PROMPTS, 10, stop=[stop])
  assert cut[1].finish_reason == "stop_string" and cut[1].text == base[1].text[:base[1].text.find(stop)]
  for g, b in zip(cut, base):
    if stop not in b.text:
      assert g.tokens == b.tokens and g.finish_reason == b.finish_reason


def test_sampling_is_seeded_and_batch_independent(ev):
  kw = dict(temperature=1.0, top_k=50, top_p=0.95)
  a = ev.generate(PROMPTS, 8, seed=3, **kw)
  assert [g.tokens for g in a] == [g.tokens for g in ev.generate(PROMPTS, 8, seed=3, **kw)]
  assert [g.tokens for g in a] != [g.tokens for g in ev.generate(PROMPTS, 8, seed=4, **kw)]
  # The first prompt's sample does not depend on what it was batched with.
  alone = ev.generate(PROMPTS[:1], 8, seed=3, **kw)
  assert alone[0].tokens == a[0].tokens
  # top_k=1 reduces sampling to greedy (top_p is checked on logits below).
  greedy = [g.tokens for g in ev.generate(PROMPTS, 8)]
  assert [g.tokens for g in ev.generate(PROMPTS, 8, temperature=2.0, top_k=1, seed=5)] == greedy


def test_filter_logits_top_p_keeps_the_smallest_head():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keep = lambda p: np.isfinite(np.asarray(filter_logits(logits, SamplingParams(1.0, 0, p), 4)))[0]
  assert keep(0.5).tolist() == [True, False, False, False]
  assert keep(0.6).tolist() == [True, True, False, False]
  assert keep(0.9).tolist() == [True, True, True, False]
  assert keep(1.0).all()
  top2 = filter_logits(logits, SamplingParams(1.0, 2, 1.0), 4)
  assert np.isfinite(np.asarray(top2))[0].tolist() == [True, True, False, False]
  banned = filter_logits(logits, SamplingParams(0.0), 3, banned=(0,))
  assert np.isfinite(np.asarray(banned))[0].tolist() == [False, True, True, False]
