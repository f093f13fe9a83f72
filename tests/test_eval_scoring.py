"""Scoring: harness log-probs == a direct full-sequence forward pass, on 1 and 8 devices, for a
batch of mixed lengths spread over several buckets and padded batches; text tokenisation; the
forced-choice arithmetic."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from msm_jax import sharding as shd
from msm_jax.data.tokenizer import train_tokenizer
from msm_jax.eval import Chat, Evaluator
from msm_jax.eval.scoring import choose, length_bucket, rows_for
from msm_jax.model import ModelDef
from tests.helpers import tiny_cfg
from tests.test_model import numpy_reference

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  texts = [json.loads(line)["text"] for line in
           (REPO / "data_pipelines/fixtures/pretrain.jsonl").read_text().splitlines()[:200]]
  tok = train_tokenizer(texts, tmp_path_factory.mktemp("tok") / "t.model", 320)
  cfg = tiny_cfg(**{"model.vocab_size": 320})
  return cfg, random_params(ModelDef(cfg.model), 0), tok


def random_params(model_def, seed, std=0.2):
  """Weights large enough that every term matters, without compiling an init."""
  rng = np.random.default_rng(seed)
  def draw(path, leaf):
    if "scale" in jax.tree_util.keystr(path):
      return (1 + 0.1 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
    return (std * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
  return jax.tree.map_with_path(draw, model_def.pure_abstract())


def direct_logprob(cfg, params, ctx, cont):
  """One unpadded row through the float64 numpy forward pass that tests/test_model.py checks
  against the model."""
  seq = np.asarray(ctx + cont, np.int64)[None]
  n = seq.shape[1] - 1
  logits = numpy_reference(params, seq[:, :-1], np.arange(n)[None], np.ones((1, n)),
                           cfg.model)[0]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  tgt = seq[0, 1:]
  on = np.arange(n) >= len(ctx) - 1
  lp = logp[np.arange(n), tgt][on]
  greedy = bool(np.all(logits.argmax(-1)[on] == tgt[on]))
  return lp.sum(), greedy


@pytest.mark.parametrize("devices", [1, 8])
def test_logprobs_equal_direct_forward(setup, devices):
  cfg, params, tok = setup
  if devices == 1:
    mesh = shd.make_mesh(cfg, jax.devices()[:1])
  else:
    cfg = tiny_cfg(**{"model.vocab_size": 320})
    cfg.mesh.update(data=2, fsdp=2, tensor=2)  # batch over 4, weights sharded too
    mesh = shd.make_mesh(cfg, jax.devices()[:8])
  ev = Evaluator(cfg, params, tok, mesh, tokens_per_batch=128)
  rng = np.random.default_rng(devices)
  lengths = [(1, 1), (1, 9), (3, 2), (17, 5), (30, 3), (2, 40), (12, 12), (5, 1), (50, 10),
             (7, 7), (20, 1)]
  pairs = [(rng.integers(4, 320, a).tolist(), rng.integers(4, 320, b).tolist())
           for a, b in lengths]
  # Make one continuation the model's own greedy choice, so is_greedy is tested both ways.
  ctx = pairs[3][0]
  logits = numpy_reference(params, np.asarray([ctx]), np.arange(len(ctx))[None],
                           np.ones((1, len(ctx))), cfg.model)
  pairs[3] = (ctx, [int(np.argmax(logits[0, -1]))])
  got = ev.score([c for c, _ in pairs], [x for _, x in pairs])
  for (c, x), rec in zip(pairs, got):
    want, greedy = direct_logprob(cfg, params, c, x)
    np.testing.assert_allclose(rec.logprob_sum, want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(rec.logprob_mean, want / len(x), rtol=1e-5, atol=1e-4)
    assert rec.num_tokens == len(x) and rec.is_greedy == greedy
  assert got[3].is_greedy
  # several buckets and more than one batch of the smallest were used
  assert len({length_bucket(a + b - 1) for a, b in lengths}) == 3
  assert len(lengths) > rows_for(16, 128, ev.scorer.shards)


def test_text_is_tokenised_jointly(setup):
  cfg, params, tok = setup
  ev = Evaluator(cfg, params, tok, shd.make_mesh(cfg, jax.devices()[:1]))
  ctx, cont = ev.encode_pair("The night train leaves the ", "station at eleven.")
  assert ctx[0] == tok.bos_id
  assert ctx[1:] + cont == tok.encode("The night train leaves the station at eleven.")
  assert tok.decode(cont).startswith(" ")  # the space moved to the continuation
  chat = Chat(({"role": "user", "content": "When does it leave?"},), "It leaves ")
  ctx, cont = ev.encode_pair(chat, "at eleven")
  head = ev.encode_prompt(Chat(chat.messages))
  assert ctx[:len(head)] == head and ctx[len(head):] + cont == tok.encode("It leaves at eleven")
  assert ev.encode_prompt(chat) == head + tok.encode("It leaves")
  # the three ways of giving a chat context agree; ids pass through unchanged
  assert ev.encode_pair(list(chat.messages), "x")[0] == ev.encode_pair(Chat(chat.messages), "x")[0]
  assert ev.encode_pair([5, 6, 7], [8, 9]) == ([5, 6, 7], [8, 9])
  r = ev.score(["The night train leaves the "], ["station at eleven."])[0]
  s = ev.score([ctx[:0] + [tok.bos_id] + tok.encode("The night train leaves the")],
               [tok.encode(" station at eleven.")])[0]
  assert r == s


def test_choose_cancels_a_position_bonus():
  prefs = np.array([-2.0, -3.0])  # the model's own preference: option 0, by 1 nat
  bonus = 5.0  # a constant bonus for whatever is listed first
  orders = [prefs + [bonus, 0], prefs + [0, bonus]]  # option 0 first, then option 1 first
  ch = choose(orders)
  assert ch.order_choices == (0, 1)  # each order alone follows the position
  assert ch.choice == 0 and ch.margin == pytest.approx(1.0)
  assert ch.prob == pytest.approx(1 / (1 + np.exp(-1.0)))
  swapped = choose([o[::-1] for o in orders[::-1]])  # the same item with options swapped
  assert swapped.choice == 1 and swapped.option_scores == ch.option_scores[::-1]


def test_forced_choice_shapes_and_errors(setup):
  cfg, params, tok = setup
  ev = Evaluator(cfg, params, tok, shd.make_mesh(cfg, jax.devices()[:1]))
  out = ev.forced_choice(["Pick: ", ["A or B? ", "B or A? "]], [["a", "b", "c"], ["a", "b"]])
  assert [len(r.option_scores) for r in out] == [3, 2]
  assert [len(r.order_scores) for r in out] == [1, 2]
  one = ev.score(["Pick: "] * 3, ["a", "b", "c"])
  assert out[0].option_scores == tuple(r.logprob_sum for r in one)
  with pytest.raises(ValueError, match="non-empty"):
    ev.score([[]], [[5]])
  with pytest.raises(ValueError, match="2 contexts but 1"):
    ev.score(["a", "b"], ["c"])
