"""Statistics: the bootstrap CI covers the true rate at about the nominal frequency; paired
comparisons find a real difference and not a fake one; seed aggregation."""

import math

import numpy as np
import pytest

from msm_jax.eval import SuiteResult, aggregate, bootstrap_ci, compare, mean_sem, paired_bootstrap


@pytest.mark.parametrize("rate,n", [(0.3, 80), (0.7, 200)])
def test_bootstrap_ci_covers_the_true_rate_at_the_nominal_frequency(rate, n):
  rng = np.random.default_rng(0)
  trials = 400
  covered = 0
  for t in range(trials):
    sample = (rng.random(n) < rate).astype(float)
    ci = bootstrap_ci(sample, n_boot=1000, seed=t)
    covered += ci["ci_low"] <= rate <= ci["ci_high"]
    assert ci["ci_low"] <= ci["value"] <= ci["ci_high"] and ci["n"] == n
  # 95% nominal; the percentile bootstrap runs slightly narrow at small n. 400 trials give a
  # binomial standard error of about 1.1 points.
  assert 0.91 <= covered / trials <= 0.98


def test_bootstrap_ci_edge_cases():
  assert bootstrap_ci([None, 1.0, None, 0.0])["n"] == 2
  empty = bootstrap_ci([None])
  assert empty["n"] == 0 and math.isnan(empty["value"])
  ci = bootstrap_ci([1.0] * 5)
  assert ci["value"] == ci["ci_low"] == ci["ci_high"] == 1.0
  wide, narrow = bootstrap_ci([0, 1] * 10), bootstrap_ci([0, 1] * 500)
  assert wide["ci_high"] - wide["ci_low"] > 3 * (narrow["ci_high"] - narrow["ci_low"])
  assert bootstrap_ci(list(range(10)), seed=1) == bootstrap_ci(list(range(10)), seed=1)


def _result(values: dict, metric="m"):
  records = [{"id": k, "domain": "", "values": {metric: v}} for k, v in values.items()]
  return SuiteResult(name="s", kind="preference", records=records,
                     metrics={metric: bootstrap_ci(list(values.values()))}, headline=[metric])


def test_paired_compare_detects_a_shift_that_unpaired_cis_miss():
  rng = np.random.default_rng(1)
  difficulty = rng.normal(0, 1, 60)  # shared item effects dominate the variance
  a = {f"i{i}": d + 0.3 + 0.1 * rng.normal() for i, d in enumerate(difficulty)}
  b = {f"i{i}": d + 0.1 * rng.normal() for i, d in enumerate(difficulty)}
  b["extra"] = 5.0  # only in b: not paired, so ignored
  c = compare(_result(a), _result(b), "m")
  assert c["n"] == 60 and c["ci_low"] > 0.2 and c["ci_high"] < 0.4 and c["p_value"] < 0.01
  assert c["diff"] == pytest.approx(c["a"] - c["b"])
  ra, rb = bootstrap_ci(list(a.values())), bootstrap_ci(list(difficulty))
  assert ra["ci_low"] < rb["ci_high"]  # the independent CIs overlap
  same = compare(_result(a), _result(a), "m")
  assert same["diff"] == 0 and same["p_value"] == 1.0
  with pytest.raises(ValueError, match="no items"):
    compare(_result({"x": 1.0}), _result({"y": 1.0}), "m")


def test_paired_bootstrap_null_p_values_are_not_small():
  rng = np.random.default_rng(2)
  ps = [paired_bootstrap(rng.random(40) < 0.5, rng.random(40) < 0.5, n_boot=500, seed=s)["p_value"]
        for s in range(60)]
  assert np.mean(np.asarray(ps) < 0.05) < 0.15


def test_mean_sem_and_seed_aggregation():
  s = mean_sem([1.0, 2.0, 3.0, None])
  assert s["mean"] == 2.0 and s["n"] == 3 and s["sem"] == pytest.approx(1 / math.sqrt(3))
  assert math.isnan(mean_sem([4.0])["sem"])
  seeds = [_result({"a": v, "b": v}) for v in (0.0, 0.5, 1.0)]
  agg = aggregate(seeds)
  assert agg["m"]["mean"] == 0.5 and agg["m"]["n"] == 3
