"""Grain pipeline: packing conserves tokens, isolates segments; seeded, resumable, sharded."""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from msm_jax.config import ConfigError, base_config
from msm_jax.data.chat import render_chat
from msm_jax.data.packing import FEATURES, chunk_example
from msm_jax.data.pipeline import make_eval_batches, make_train_iterator
from msm_jax.data.sources import CHATS, DOCUMENTS, open_source
from msm_jax.data.tokenizer import train_tokenizer

FIXTURES = Path(__file__).resolve().parent.parent / "data_pipelines" / "fixtures"
PRETRAIN = str(FIXTURES / "pretrain.jsonl")
FINETUNE = str(FIXTURES / "finetune.jsonl")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  texts = open_source(PRETRAIN, DOCUMENTS)
  return train_tokenizer(texts, tmp_path_factory.mktemp("pack_tok") / "t.model", 512)


def config(**data):
  cfg = base_config()
  cfg.seq_len, cfg.batch_size, cfg.seed = 48, 6, 0
  cfg.stage = "pretrain"
  cfg.data.train = (PRETRAIN,)
  cfg.data.num_epochs, cfg.data.prefetch = 1, 0
  for key, value in data.items():
    cfg.data[key] = value
  return cfg


def take(it, n=None):
  out = []
  for batch in it:
    out.append(batch)
    if n is not None and len(out) == n:
      break
  return out


def segments(batches):
  """Every packed segment as its full token tuple (inputs + the last target) and its loss mask."""
  out = []
  for b in batches:
    for r in range(b["segment_ids"].shape[0]):
      seg = b["segment_ids"][r]
      for s in np.unique(seg[seg > 0]):
        idx = np.flatnonzero(seg == s)
        toks = tuple(b["inputs"][r, idx]) + (int(b["targets"][r, idx[-1]]),)
        out.append((tuple(int(t) for t in toks), tuple(int(m) for m in b["loss_mask"][r, idx])))
  return out


def expected_chunks(sequences, masks, seq_len):
  """The spec, written out independently: chunks s[k*L : k*L+L+1] of each sequence."""
  out = []
  for s, m in zip(sequences, masks):
    for start in range(0, len(s) - 1, seq_len):
      piece = s[start:start + seq_len + 1]
      out.append((tuple(piece), tuple(m[start + 1:start + seq_len + 1])))
  return out


def doc_sequences(tok, path=PRETRAIN):
  seqs = [[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in open_source(path, DOCUMENTS)]
  return seqs, [[1] * len(s) for s in seqs]


def test_epoch_conserves_every_token(tok):
  cfg = config()
  batches = take(make_train_iterator(cfg, tok, process_index=0, process_count=1))
  seqs, masks = doc_sequences(tok)
  assert any(len(s) > cfg.seq_len + 1 for s in seqs), "fixture must exercise chunking"
  assert Counter(segments(batches)) == Counter(expected_chunks(seqs, masks, cfg.seq_len))
  n_targets = sum(int((b["segment_ids"] > 0).sum()) for b in batches)
  assert n_targets == sum(len(s) - 1 for s in seqs)
  for b in batches:
    assert set(b) == set(FEATURES)
    for v in b.values():
      assert v.shape == (cfg.batch_size, cfg.seq_len) and v.dtype == np.int32


def test_rows_are_well_formed(tok):
  cfg = config()
  for b in take(make_train_iterator(cfg, tok, process_index=0, process_count=1)):
    for r in range(cfg.batch_size):
      seg, pos = b["segment_ids"][r], b["positions"][r]
      real = seg > 0
      # Segments 1..k in order, each contiguous, padding (0) only at the end.
      n_real = int(real.sum())
      assert real[:n_real].all() and not real[n_real:].any()
      ids = seg[:n_real]
      assert n_real == 0 or (ids[0] == 1 and set(np.diff(ids).tolist()) <= {0, 1})
      for s in np.unique(ids):
        idx = np.flatnonzero(seg == s)
        assert np.array_equal(pos[idx], np.arange(len(idx)))  # positions restart per segment
        # Within a segment the targets are the next inputs: no document runs into another.
        assert np.array_equal(b["targets"][r, idx[:-1]], b["inputs"][r, idx[1:]])
      for k in ("inputs", "targets", "loss_mask", "positions"):
        assert not np.any(b[k][r][~real])  # padding is all zeros, never trained on
      assert np.array_equal(b["loss_mask"][r][real], np.ones(real.sum()))  # documents: all on


def test_chat_loss_mask_is_on_assistant_targets(tok):
  cfg = config(train=(FINETUNE,))
  cfg.stage = "finetune"
  batches = take(make_train_iterator(cfg, tok, process_index=0, process_count=1))
  chats = open_source(FINETUNE, CHATS)
  rendered = [render_chat(c, tok, "msm") for c in chats]
  expected = expected_chunks([r[0].tolist() for r in rendered], [r[1].tolist() for r in rendered],
                             cfg.seq_len)
  assert Counter(segments(batches)) == Counter(expected)
  assert sum(int(b["loss_mask"].sum()) for b in batches) == sum(int(m[1:].sum())
                                                                for _, m in rendered)


def test_seeded_shuffle_is_deterministic(tok):
  a = take(make_train_iterator(config(), tok, process_index=0, process_count=1), 5)
  b = take(make_train_iterator(config(), tok, process_index=0, process_count=1), 5)
  for x, y in zip(a, b):
    for k in FEATURES:
      np.testing.assert_array_equal(x[k], y[k])
  cfg = config()
  cfg.seed = 1
  c = take(make_train_iterator(cfg, tok, process_index=0, process_count=1), 5)
  assert not all(np.array_equal(x["inputs"], z["inputs"]) for x, z in zip(a, c))
  plain = take(make_train_iterator(config(shuffle=False), tok, process_index=0, process_count=1),
               1)
  first = [tok.bos_id] + tok.encode(open_source(PRETRAIN, DOCUMENTS)[0])
  assert plain[0]["inputs"][0, :10].tolist() == first[:10]  # no shuffle: file order


@pytest.mark.parametrize("prefetch", [0, 2])
def test_restore_mid_epoch_gives_identical_batches(tok, prefetch):
  cfg = config(prefetch=prefetch, num_epochs=0, train=(PRETRAIN, str(FIXTURES / "midtrain.jsonl")),
               train_weights=(0.7, 0.3))
  it = make_train_iterator(cfg, tok, process_index=0, process_count=1)
  take(it, 7)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  after = take(it, 30)  # runs past the end of the first epoch of the smaller file
  fresh = make_train_iterator(cfg, tok, process_index=0, process_count=1)
  fresh.set_state(state)
  again = take(fresh, 30)
  for x, y in zip(after, again, strict=True):
    for k in FEATURES:
      np.testing.assert_array_equal(x[k], y[k])
  it.close()
  fresh.close()


def test_orbax_checkpoint_handler_round_trip(tok, tmp_path):
  from etils import epath
  from msm_jax.data.shards import DataRestore, DataSave, ShardedDataHandler
  cfg = config(prefetch=2, num_epochs=0)
  it = make_train_iterator(cfg, tok, process_index=0, process_count=1)
  take(it, 3)
  handler = ShardedDataHandler()  # the one msm_jax.checkpoint uses
  handler.save(epath.Path(tmp_path), args=DataSave(it))
  expected = take(it, 4)
  restored = make_train_iterator(cfg, tok, process_index=0, process_count=1)
  handler.restore(epath.Path(tmp_path), args=DataRestore(restored))
  for x, y in zip(expected, take(restored, 4)):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
  it.close()
  restored.close()


def test_host_shards_are_disjoint_and_complete(tok, tmp_path):
  # Number every document so that each packed segment says which document it came from.
  corpus = tmp_path / "numbered.jsonl"
  texts = open_source(PRETRAIN, DOCUMENTS)
  corpus.write_text("".join(json.dumps({"text": f"{i}|{t}"}) + "\n" for i, t in enumerate(texts)))
  cfg = config(train=(str(corpus),))
  cfg.seq_len = max(len(tok.encode(t)) for t in texts) + 8  # no document is chunked

  def doc_ids(batches):
    return [int(tok.decode(toks[1:]).split("|")[0]) for toks, _ in segments(batches)]

  whole = doc_ids(take(make_train_iterator(cfg, tok, process_index=0, process_count=1)))
  assert sorted(whole) == list(range(len(texts)))
  parts = []
  for host in range(3):
    batches = take(make_train_iterator(cfg, tok, process_index=host, process_count=3))
    assert batches[0]["inputs"].shape == (cfg.batch_size // 3, cfg.seq_len)
    parts.append(doc_ids(batches))
  assert sorted(sum(parts, [])) == list(range(len(texts)))  # complete, nothing twice
  assert all(len(set(p)) == len(p) for p in parts)
  # Data shards fix the order, not the host count: 2 hosts' rows side by side are the batches of
  # one host running both shards; 3 hosts over 6 shards read disjoint shards too.
  cfg.data.shards = 2
  one = take(make_train_iterator(cfg, tok, process_index=0, process_count=1))
  two = [take(make_train_iterator(cfg, tok, process_index=h, process_count=2)) for h in range(2)]
  for whole, h0, h1 in zip(one, *two, strict=True):
    for k in FEATURES:
      np.testing.assert_array_equal(whole[k], np.concatenate([h0[k], h1[k]]))
  cfg.data.shards = 6
  parts = [doc_ids(take(make_train_iterator(cfg, tok, process_index=h, process_count=3)))
           for h in range(3)]
  assert sorted(sum(parts, [])) == list(range(len(texts)))
  with pytest.raises(ConfigError, match="config.batch_size"):
    make_train_iterator(cfg, tok, process_index=0, process_count=4)


def test_mixture_follows_weights_and_repeats(tok, tmp_path):
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  a.write_text("".join(json.dumps({"text": f"alpha {i}"}) + "\n" for i in range(20)))
  b.write_text("".join(json.dumps({"text": f"omega {i}"}) + "\n" for i in range(20)))
  cfg = config(train=(str(a), str(b)), train_weights=(3.0, 1.0), num_epochs=0)
  batches = take(make_train_iterator(cfg, tok, process_index=0, process_count=1), 25)
  first = Counter(tok.decode(s[0][1:])[:5] for s in segments(batches))
  share = first["alpha"] / (first["alpha"] + first["omega"])
  assert 0.65 < share < 0.85, first  # 3:1, repeated well past one epoch of either file


def test_eval_batches_are_deterministic_and_host_sliced(tok):
  cfg = config(eval=(str(FIXTURES / "pretrain_eval.jsonl"),))
  full = make_eval_batches(cfg, tok, process_index=0, process_count=1)
  assert full and all(b["inputs"].shape == (cfg.batch_size, cfg.seq_len) for b in full)
  seqs, masks = doc_sequences(tok, cfg.data.eval[0])
  assert Counter(segments(full)) == Counter(expected_chunks(seqs, masks, cfg.seq_len))
  assert not full[-1]["segment_ids"][-1].any(), "last batch padded with segment-0 rows"
  assert len(make_eval_batches(cfg, tok, 2, process_index=0, process_count=1)) == 2
  halves = [make_eval_batches(cfg, tok, process_index=h, process_count=2) for h in range(2)]
  for whole, h0, h1 in zip(full, *halves, strict=True):
    np.testing.assert_array_equal(whole["targets"], np.concatenate([h0["targets"],
                                                                    h1["targets"]]))
  assert make_eval_batches(config(), tok) == []


def test_chunking_edges():
  tokens = np.arange(10, dtype=np.int32)
  rows = chunk_example(tokens, np.ones_like(tokens), 4)
  assert [r["inputs"].tolist() for r in rows] == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
  assert [r["targets"].tolist() for r in rows] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]
  assert chunk_example(tokens[:1], tokens[:1], 4) == []  # a lone token has no target
  assert len(chunk_example(tokens[:5], tokens[:5], 4)) == 1  # exactly seq_len + 1: one row


def test_worker_processes_conserve_tokens_and_resume(tok):
  cfg = config(worker_count=2)
  it = make_train_iterator(cfg, tok, process_index=0, process_count=1)
  head = take(it, 4)
  state = json.loads(json.dumps(it.get_state()))
  tail = take(it)
  seqs, masks = doc_sequences(tok)
  assert Counter(segments(head + tail)) == Counter(expected_chunks(seqs, masks, cfg.seq_len))
  resumed = make_train_iterator(cfg, tok, process_index=0, process_count=1)
  resumed.set_state(state)
  for x, y in zip(tail, take(resumed), strict=True):
    np.testing.assert_array_equal(x["inputs"], y["inputs"])
  it.close()
  resumed.close()
