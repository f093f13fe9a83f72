"""How many document pairs are near-duplicates (word 5-gram Jaccard above a threshold).

All pairs are screened with MinHash signatures (numpy, 128 hashes), and every pair whose
estimate comes near the threshold is checked exactly, so the count is exact in practice while
the cost stays O(n^2 * 128) vector compares rather than O(n^2) set intersections in Python.
Hashes are CRC-based, not Python's salted `hash`, so the numbers are the same on every run.
Above `max_docs` documents a seeded sample is measured (and the summary says so).
"""

from __future__ import annotations

import random
import re
import zlib

import numpy as np

_WORD_RE = re.compile(r"\w+")
_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def shingle_hashes(text: str, n: int = 5, cache: dict | None = None) -> np.ndarray:
  """Sorted unique 64-bit hashes of the word n-grams of `text` (lowercased)."""
  cache = {} if cache is None else cache
  words = _WORD_RE.findall(text.lower())
  if len(words) < n:
    return np.zeros(0, np.uint64)
  ids = np.fromiter((cache.setdefault(w, zlib.crc32(w.encode())) for w in words), np.uint64,
                    len(words))
  h = np.zeros(len(words) - n + 1, np.uint64)
  mult = np.uint64(1099511628211)
  with np.errstate(over="ignore"):
    for k in range(n):
      h = h * mult + ids[k:len(words) - n + 1 + k] + np.uint64(k + 1)
  return np.unique(h)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
  if not len(a) and not len(b):
    return 0.0
  inter = len(np.intersect1d(a, b, assume_unique=True))
  return inter / (len(a) + len(b) - inter)


def minhash(shingles: list[np.ndarray], num_perm: int = 128, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  a = rng.integers(1, 2**63, num_perm, dtype=np.uint64) | np.uint64(1)
  b = rng.integers(0, 2**63, num_perm, dtype=np.uint64)
  sig = np.full((len(shingles), num_perm), _MASK, np.uint64)
  with np.errstate(over="ignore"):
    for i, s in enumerate(shingles):
      if len(s):
        sig[i] = (s[:, None] * a[None, :] + b[None, :]).min(axis=0)
  return sig


def near_duplicates(texts: list[str], n: int = 5, threshold: float = 0.5,
                    max_docs: int = 3000, seed: int = 0) -> dict:
  """Share of document pairs with n-gram Jaccard > threshold, plus the mean and max."""
  idx = list(range(len(texts)))
  if len(idx) > max_docs:
    idx = sorted(random.Random(seed).sample(idx, max_docs))
  cache: dict = {}
  sh = [shingle_hashes(texts[i], n, cache) for i in idx]
  sig = minhash(sh)
  m = len(sh)
  pairs = m * (m - 1) // 2
  hits, est_sum, max_j, worst = 0, 0.0, 0.0, None
  screen = max(0.0, threshold - 0.2)
  empty = np.array([not len(s) for s in sh], bool)
  for i in range(m - 1):
    est = (sig[i + 1:] == sig[i]).mean(axis=1)
    est[empty[i + 1:]] = 0.0
    if empty[i]:
      est[:] = 0.0
    est_sum += float(est.sum())
    for off in np.nonzero(est > screen)[0]:
      j = i + 1 + int(off)
      exact = jaccard(sh[i], sh[j])
      if exact > max_j:
        max_j, worst = exact, (idx[i], idx[j])
      hits += exact > threshold
  return {
      "ngram": n, "threshold": threshold, "documents_measured": m, "pairs": pairs,
      "near_duplicate_pairs": int(hits), "near_duplicate_share": hits / pairs if pairs else 0.0,
      "mean_jaccard": est_sum / pairs if pairs else 0.0,
      "max_jaccard_checked": max_j, "most_similar_pair": list(worst) if worst else None,
  }
