"""Examples -> next-token training rows -> packed fixed-length rows.

An example is a token sequence `s` with a per-token mask (documents: all ones; chats: the
assistant mask from `render_chat`). It yields `len(s) - 1` training positions: inputs `s[:-1]`,
targets `s[1:]`, loss_mask `mask[1:]` (the mask sits on the *target* token). Sequences longer than
`seq_len + 1` are cut into chunks `s[k*L : k*L + L + 1]` that overlap by one token, so every
target is trained on exactly once and each chunk is its own segment with positions from 0.

Rows are packed first-fit by grain's `FirstFitPackIterDataset`, which writes per-row segment ids
1..k (0 = padding) and per-segment positions; we keep one copy of each and zero everything on
padding.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np
from grain import experimental as gx

from msm_jax.data.chat import render_chat

FEATURES = ("inputs", "targets", "loss_mask", "segment_ids", "positions")


class DocumentExample(grain.transforms.Map):
  """text -> {tokens, mask}: [bos] + encode(text) + [eos], every target trained on."""

  def __init__(self, tokenizer, add_bos: bool = True):
    self.tokenizer, self.add_bos = tokenizer, add_bos

  def map(self, text: str) -> dict[str, np.ndarray]:
    ids = ([self.tokenizer.bos_id] if self.add_bos else []) + list(self.tokenizer.encode(text))
    ids.append(self.tokenizer.eos_id)
    tokens = np.asarray(ids, np.int32)
    return {"tokens": tokens, "mask": np.ones_like(tokens)}


class ChatExample(grain.transforms.Map):
  """messages -> {tokens, mask}: the chat template's ids and assistant mask."""

  def __init__(self, tokenizer, template: str = "msm"):
    self.tokenizer, self.template = tokenizer, template

  def map(self, messages: Sequence[dict]) -> dict[str, np.ndarray]:
    tokens, mask = render_chat(messages, self.tokenizer, self.template)
    return {"tokens": tokens, "mask": mask}


def chunk_example(tokens: np.ndarray, mask: np.ndarray, seq_len: int) -> list[dict[str, Any]]:
  """One example -> training rows of at most `seq_len` positions (see the module docstring)."""
  rows = []
  for start in range(0, max(len(tokens) - 1, 0), seq_len):
    piece = tokens[start:start + seq_len + 1]
    rows.append({"inputs": piece[:-1], "targets": piece[1:],
                 "loss_mask": mask[start + 1:start + seq_len + 1]})
  return rows


class ChunkExample(gx.FlatMapTransform):
  """grain FlatMap form of `chunk_example`."""

  max_fan_out = 1 << 20  # the iterator version does not cap it; long documents are fine

  def __init__(self, seq_len: int):
    self.seq_len = seq_len

  def flat_map(self, example: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    return chunk_example(example["tokens"], example["mask"], self.seq_len)


class FinishRow(grain.transforms.Map):
  """grain's packed features -> our five int32 arrays, all zero on padding."""

  def map(self, row: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    seg = row["inputs_segment_ids"].astype(np.int32)
    real = seg > 0
    return {
        "inputs": np.where(real, row["inputs"], 0).astype(np.int32),
        "targets": np.where(real, row["targets"], 0).astype(np.int32),
        "loss_mask": np.where(real, row["loss_mask"], 0).astype(np.int32),
        "segment_ids": seg,
        "positions": np.where(real, row["inputs_positions"], 0).astype(np.int32),
    }


def pack(ds: grain.IterDataset, seq_len: int, num_bins: int) -> grain.IterDataset:
  """Chunked rows -> first-fit packed rows of exactly `seq_len` tokens."""
  length = {"inputs": seq_len, "targets": seq_len, "loss_mask": seq_len}
  packed = gx.FirstFitPackIterDataset(ds, length_struct=length, num_packing_bins=num_bins,
                                      shuffle_bins=False)
  return packed.map(FinishRow())


class PadBatch(grain.transforms.Map):
  """A short final batch -> `batch_size` rows, the extra rows all padding (segment 0)."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size

  def map(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(batch["segment_ids"])
    if n == self.batch_size:
      return batch
    return {k: np.pad(v, ((0, self.batch_size - n), (0, 0))) for k, v in batch.items()}


def batch_rows(ds: grain.IterDataset, batch_size: int) -> grain.IterDataset:
  return ds.batch(batch_size, drop_remainder=False).map(PadBatch(batch_size))
