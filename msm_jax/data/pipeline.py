"""The Grain input pipeline: corpus files -> tokenised examples -> packed, batched rows.

Train, per file in `config.data.train`:
  records -> this host's slice (index process_index::process_count, so hosts are disjoint and
  together complete) -> shuffle (seeded, reshuffled each epoch) -> repeat -> tokenise (threads)
  -> chunk to <= seq_len positions
then a weighted mix of the files (`config.data.train_weights`), first-fit packing, batching to
this host's share of `config.batch_size`, and prefetch (a thread, or `worker_count` processes).
With worker processes each worker packs its own slice of the records, so the batch order (and a
saved iterator state) belongs to that worker count: keep it fixed across a resume.
Hosts run data shards (`msm_jax.data.shards`): "host" above is data shard s of
`config.data.shards`, so the batches do not depend on the number of hosts. The returned iterator's
`get_state()` is a small JSON-able dict (every shard's grain state), saved next to the model by
`ShardedDataHandler`, so a resumed run, on any number of hosts, continues from the exact next
batch.

Eval (`config.data.eval`): the same rows, in file order, one pass, packed into global batches of
`config.batch_size` rows; each host keeps its own row slice, so the global batches do not depend
on the number of hosts.

Batches are dicts of int32 numpy arrays [rows, seq_len]: inputs, targets, segment_ids,
positions, loss_mask (see `msm_jax.data.packing` for the row semantics).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import grain
from grain import experimental as gx

from msm_io import paths

from msm_jax.config import ConfigError
from msm_jax.data import packing
from msm_jax.data.shards import ShardedIterator
from msm_jax.data.sources import CHATS, CorpusError, iter_texts, open_source, resolve_kind
from msm_jax.data.tokenizer import load_tokenizer_file, train_tokenizer

TOKENIZER_FILE = "tokenizer.model"
_READ_THREADS = 2  # tokenising threads per source; the tokenizer is fast, cores are few


def _hosts(process_index, process_count) -> tuple[int, int]:
  if process_index is None or process_count is None:
    import jax
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  return int(process_index), int(process_count)


def build_tokenizer(cfg, workdir):
  """config.data.tokenizer if set, else one trained on config.data.train.

  Training reads the text of config.data.train (documents, or every chat message) with
  vocab_size = config.model.vocab_size and writes workdir/tokenizer.model (deterministic: the
  same corpus gives the same bytes). A run that continues another takes that run's tokenizer
  instead: the trainer decides (`msm_jax.trainer._tokenizer`) and checks the vocabulary.
  """
  if cfg.data.tokenizer:
    return load_tokenizer_file(cfg.data.tokenizer)
  if not cfg.data.train:
    raise ConfigError("config.data.tokenizer: not set, and config.data.train names no files "
                      "to train one on")
  kind = resolve_kind(cfg.data.kind, cfg.stage)
  texts = itertools.chain.from_iterable(
      iter_texts(f, kind, cfg.data.text_field) for f in cfg.data.train)
  return train_tokenizer(texts, paths.path(workdir) / TOKENIZER_FILE, int(cfg.model.vocab_size))


def example_transform(cfg, tokenizer, kind: str) -> grain.transforms.Map:
  if kind == CHATS:
    return packing.ChatExample(tokenizer, cfg.data.chat_template)
  return packing.DocumentExample(tokenizer, bool(cfg.data.add_bos))


def _shuffle_seed(seed: int, index: int) -> int:
  return (int(seed) * 1_000_003 + index * 7919) % (1 << 32)


def _weights(cfg) -> list[float]:
  files, weights = cfg.data.train, cfg.data.train_weights
  if not weights:
    return [1.0] * len(files)
  if len(weights) != len(files):
    raise ConfigError("config.data.train_weights: need one weight per file in "
                      "config.data.train")
  if any(w < 0 for w in weights) or not sum(weights) > 0:
    raise ConfigError(f"config.data.train_weights: must be >= 0 with a positive sum, got "
                      f"{tuple(weights)}")
  return [float(w) for w in weights]


def _local_batch(cfg, process_count: int) -> int:
  if cfg.batch_size % process_count:
    raise ConfigError(f"config.batch_size: {cfg.batch_size} rows cannot be split evenly over "
                      f"{process_count} hosts")
  return cfg.batch_size // process_count


def _packing_bins(rows_per_batch: int) -> int:
  """Open bins for first-fit: more bins pack denser (on the fixtures 4x a batch gains 3-5 points
  of fill over 1x) at the cost of a little re-packing after a restore."""
  return max(4 * rows_per_batch, 32)


def make_train_dataset(cfg, tokenizer, *, process_index=None, process_count=None,
                       opened: dict | None = None) -> grain.IterDataset:
  """The training pipeline as a grain IterDataset (see the module docstring). `opened`: the
  train files already read ({spec: records}), shared by the data shards of one iterator."""
  pi, pc = _hosts(process_index, process_count)
  local = _local_batch(cfg, pc)
  if not cfg.data.train:
    raise ConfigError("config.data.train: no training files given")
  kind = resolve_kind(cfg.data.kind, cfg.stage)
  weights = _weights(cfg)
  to_example = example_transform(cfg, tokenizer, kind)
  epochs = None if int(cfg.data.num_epochs) == 0 else int(cfg.data.num_epochs)
  streams = []
  for i, spec in enumerate(cfg.data.train):
    if weights[i] == 0:
      continue
    records = opened[spec] if opened else open_source(spec, kind, cfg.data.text_field)
    ds = grain.MapDataset.source(records)[pi::pc]
    if len(ds) == 0:
      raise CorpusError(f"{spec}: {len(records)} records leave host {pi} of {pc} with none")
    if cfg.data.shuffle:
      ds = ds.shuffle(seed=_shuffle_seed(cfg.seed, i))
    ds = ds.repeat(epochs).map(to_example)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=_READ_THREADS,
                                              prefetch_buffer_size=max(16, 2 * local)))
    streams.append((gx.FlatMapIterDataset(it, packing.ChunkExample(cfg.seq_len)), weights[i]))
  if len(streams) == 1:
    ds = streams[0][0]
  else:
    ds = grain.IterDataset.mix([s for s, _ in streams], [w for _, w in streams])
  ds = packing.pack(ds, cfg.seq_len, num_bins=_packing_bins(local))
  ds = packing.batch_rows(ds, local)
  if cfg.data.worker_count > 0:
    _parse_absl_flags()
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(cfg.data.worker_count),
        per_worker_buffer_size=max(1, int(cfg.data.prefetch))))
  elif cfg.data.prefetch > 0:
    ds = gx.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=int(cfg.data.prefetch))
  return ds


def _parse_absl_flags() -> None:
  """grain's worker processes read absl flags, which are unparsed unless the program used absl.app:
  parse none (defaults) so they can be read."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS(sys.argv[:1], known_only=True)


def make_train_iterator(cfg, tokenizer, *, process_index=None, process_count=None):
  """A checkpointable iterator of this host's batches [batch/hosts, seq_len], read from the data
  shards that cover this host's rows (`msm_jax.data.shards`: the order is the same for any host
  count).

  With config.data.num_epochs > 0 it ends after that many passes (the last batch padded with
  segment-0 rows); with several files it ends when the first file runs out.
  """
  pi, pc = _hosts(process_index, process_count)
  _local_batch(cfg, pc)  # fail now, not at the first batch
  if not cfg.data.train:
    raise ConfigError("config.data.train: no training files given")
  kind = resolve_kind(cfg.data.kind, cfg.stage)
  # Every train file is read (and each record checked) now, once, before any step: the shards are
  # built lazily (their count may come from the checkpoint being resumed) and share these.
  opened = {spec: open_source(spec, kind, cfg.data.text_field)
            for spec, w in zip(cfg.data.train, _weights(cfg)) if w}

  def make_shard(shard: int, num_shards: int):
    return iter(make_train_dataset(cfg, tokenizer, process_index=shard, process_count=num_shards,
                                   opened=opened))

  return ShardedIterator(make_shard, num_shards=int(cfg.data.get("shards", 0)),
                         batch_size=int(cfg.batch_size), process_index=pi, process_count=pc)


def make_eval_batches(cfg, tokenizer, num_batches=None, *, process_index=None,
                      process_count=None) -> list[dict]:
  """Held-out batches from config.data.eval: file order, no shuffle, one pass.

  Packed into global batches of config.batch_size rows (the last padded with segment-0 rows);
  returns this host's rows of each, at most `num_batches` batches (None: all).
  """
  if not cfg.data.eval:
    return []
  pi, pc = _hosts(process_index, process_count)
  local = _local_batch(cfg, pc)
  kind = resolve_kind(cfg.data.kind, cfg.stage)
  to_example = example_transform(cfg, tokenizer, kind)
  parts = [grain.MapDataset.source(open_source(spec, kind, cfg.data.text_field))
           for spec in cfg.data.eval]
  ds = grain.MapDataset.concatenate(parts).map(to_example)
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=_READ_THREADS, prefetch_buffer_size=16))
  rows = packing.pack(gx.FlatMapIterDataset(it, packing.ChunkExample(cfg.seq_len)),
                      cfg.seq_len, num_bins=_packing_bins(cfg.batch_size))
  batches = []
  for batch in packing.batch_rows(rows, cfg.batch_size):
    if num_batches is not None and len(batches) >= num_batches:
      break
    batches.append({k: v[pi * local:(pi + 1) * local] for k, v in batch.items()})
  return batches
