"""Rates with bootstrap confidence intervals, paired comparisons, aggregation over seeds.

Everything works on per-item values (a 0/1 choice, a per-item gap, a log-prob), because items are
the unit that was sampled: a CI over items says how much a rate could move on another draw of
items like these. Paired comparisons resample the same items for both checkpoints, which removes
the between-item variance that both share (item difficulty), so they detect smaller differences
than two independent CIs would.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

N_BOOT = 2000
_MAX_CELLS = 4_000_000  # resample in chunks of at most this many indices


def _boot_means(values_N: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
  n = len(values_N)
  chunk = max(1, _MAX_CELLS // n)
  out = []
  for start in range(0, n_boot, chunk):
    idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
    out.append(values_N[idx].mean(axis=1))
  return np.concatenate(out)


def _clean(values: Iterable) -> np.ndarray:
  return np.asarray([float(v) for v in values if v is not None and not _isnan(v)], np.float64)


def _isnan(v) -> bool:
  return isinstance(v, float) and math.isnan(v)


def bootstrap_ci(values: Sequence, *, confidence: float = 0.95, n_boot: int = N_BOOT,
                 seed: int = 0) -> dict:
  """Mean of `values` (None entries skipped) with a percentile-bootstrap CI over items."""
  x = _clean(values)
  if x.size == 0:
    return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
  means = _boot_means(x, n_boot, np.random.default_rng(seed))
  tail = (1 - confidence) / 2 * 100
  low, high = np.percentile(means, [tail, 100 - tail])
  return {"value": float(x.mean()), "ci_low": float(low), "ci_high": float(high), "n": int(x.size)}


def paired_bootstrap(a: Sequence, b: Sequence, *, confidence: float = 0.95, n_boot: int = N_BOOT,
                     seed: int = 0) -> dict:
  """Difference of means a - b over paired items (pairs with a None dropped), with its CI and a
  two-sided bootstrap p-value for "no difference"."""
  pairs = [(x, y) for x, y in zip(a, b)
           if x is not None and y is not None and not _isnan(x) and not _isnan(y)]
  if not pairs:
    return {"diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
            "n": 0}
  d = np.asarray([float(x) - float(y) for x, y in pairs])
  means = _boot_means(d, n_boot, np.random.default_rng(seed))
  tail = (1 - confidence) / 2 * 100
  low, high = np.percentile(means, [tail, 100 - tail])
  if np.all(d == 0):
    p = 1.0
  else:
    p = min(1.0, 2 * min(np.mean(means <= 0), np.mean(means >= 0)))
  return {"diff": float(d.mean()), "ci_low": float(low), "ci_high": float(high),
          "p_value": float(p), "n": len(pairs)}


def mean_sem(values: Sequence) -> dict:
  """Mean and standard error of the mean (e.g. one metric over training seeds)."""
  x = _clean(values)
  if x.size == 0:
    return {"mean": math.nan, "sem": math.nan, "n": 0}
  sem = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else math.nan
  return {"mean": float(x.mean()), "sem": sem, "n": int(x.size)}


def t_interval(values: Sequence, *, confidence: float = 0.95) -> dict:
  """Mean of independent replicates (e.g. one gap per training seed, each from its own base
  model) with a Student-t CI: the interval a reviewer expects over seeds. With fewer than two
  values the CI is undefined (NaN); None entries are skipped."""
  from scipy import stats as scipy_stats
  x = _clean(values)
  n = int(x.size)
  if n == 0:
    return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "sem": math.nan, "n": 0}
  mean = float(x.mean())
  if n < 2:
    return {"value": mean, "ci_low": math.nan, "ci_high": math.nan, "sem": math.nan, "n": n}
  sem = float(x.std(ddof=1) / math.sqrt(n))
  half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * sem
  return {"value": mean, "ci_low": mean - half, "ci_high": mean + half, "sem": sem, "n": n}


def hierarchical_bootstrap(groups: Sequence[Sequence], *, confidence: float = 0.95,
                           n_boot: int = N_BOOT, seed: int = 0) -> dict:
  """Mean of the group means (e.g. one group of per-item values per base model) with a two-level
  percentile-bootstrap CI: resample groups, then items within each drawn group, so both the
  between-model and the between-item variance show (pooling items over models hides the
  first). Empty groups are dropped."""
  gs = [g for g in (_clean(x) for x in groups) if g.size]
  if not gs:
    return {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan, "groups": 0}
  rng = np.random.default_rng(seed)
  pick_BxG = rng.integers(0, len(gs), size=(n_boot, len(gs)))
  means_BxG = np.empty(pick_BxG.shape)
  for g, x in enumerate(gs):
    drawn = pick_BxG == g
    if drawn.any():
      means_BxG[drawn] = _boot_means(x, int(drawn.sum()), rng)
  tail = (1 - confidence) / 2 * 100
  low, high = np.percentile(means_BxG.mean(axis=1), [tail, 100 - tail])
  return {"value": float(np.mean([g.mean() for g in gs])), "ci_low": float(low),
          "ci_high": float(high), "groups": len(gs)}


def item_values(result, metric: str) -> dict:
  """{item id: value} of one metric in a suite result (items without a value left out)."""
  out = {}
  for rec in result.records:
    v = rec["values"].get(metric)
    if v is not None:
      out[rec["id"]] = v
  return out


def compare(result_a, result_b, metric: str, *, n_boot: int = N_BOOT, seed: int = 0) -> dict:
  """Paired bootstrap of metric(a) - metric(b) over the items both results scored."""
  va, vb = item_values(result_a, metric), item_values(result_b, metric)
  ids = sorted(set(va) & set(vb))
  if not ids:
    raise ValueError(f"metric {metric!r}: no items with a value in both results")
  out = paired_bootstrap([va[i] for i in ids], [vb[i] for i in ids], n_boot=n_boot, seed=seed)
  return {"metric": metric, "a": float(np.mean([va[i] for i in ids])),
          "b": float(np.mean([vb[i] for i in ids])), **out}


def aggregate(results: Sequence, metric: str | None = None) -> dict:
  """Over results of the same suite from several seeds: {metric: mean, sem, n} of the metric
  values (each seed counts once, whatever its item count)."""
  names = [metric] if metric else sorted({m for r in results for m in r.metrics})
  return {m: mean_sem([r.metrics[m]["value"] for r in results if m in r.metrics]) for m in names}
