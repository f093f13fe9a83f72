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


def test_t_interval_over_seeds_matches_a_hand_computation():
  from msm_jax.eval.stats import t_interval
  # cheese's three per-seed gaps (docs/experiment.md): mean +- t(0.975, df=2) * sd / sqrt(3),
  # with the tabulated quantile 4.302652729911275; issue 14 quotes [0.33, 0.85]
  gaps = [0.69, 0.59, 0.48]
  mean = sum(gaps) / 3
  sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / 2)
  half = 4.302652729911275 * sd / math.sqrt(3)
  ci = t_interval(gaps)
  assert ci["n"] == 3 and ci["value"] == pytest.approx(mean)
  assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((mean - half, mean + half))
  assert (round(ci["ci_low"], 2), round(ci["ci_high"], 2)) == (0.33, 0.85)
  five = t_interval([1.0, 2.0, 3.0, 4.0, 10.0], confidence=0.9)  # t(0.95, df=4) = 2.131846786
  assert five["ci_high"] - 4.0 == pytest.approx(2.131846786326649 * np.std(
      [1, 2, 3, 4, 10], ddof=1) / math.sqrt(5))
  one = t_interval([0.4, None])  # one seed: a mean but no interval
  assert one["value"] == 0.4 and math.isnan(one["ci_low"]) and one["n"] == 1


def test_t_interval_covers_the_true_mean_at_the_nominal_frequency():
  from msm_jax.eval.stats import t_interval
  rng = np.random.default_rng(0)
  covered = [(ci := t_interval(rng.normal(0.5, 0.2, 3)))["ci_low"] <= 0.5 <= ci["ci_high"]
             for _ in range(2000)]
  assert 0.93 <= np.mean(covered) <= 0.97


def test_hierarchical_bootstrap_shows_the_between_model_variance_pooling_hides():
  from msm_jax.eval.stats import hierarchical_bootstrap
  one = np.random.default_rng(1).random(300)  # one group: the ordinary item bootstrap
  h, b = hierarchical_bootstrap([one]), bootstrap_ci(one)
  assert h["value"] == pytest.approx(one.mean()) and h["groups"] == 1
  assert (h["ci_low"], h["ci_high"]) == pytest.approx((b["ci_low"], b["ci_high"]), abs=0.01)
  # 10 models, each with its own offset (sd 0.2), 40 noisy items each: the pooled item bootstrap
  # treats 400 items as independent and misses the true mean (0) far more often than 5%
  rng = np.random.default_rng(0)
  hit_h = hit_pooled = 0
  for t in range(200):
    groups = [rng.normal(rng.normal(0, 0.2), 0.5, 40) for _ in range(10)]
    h = hierarchical_bootstrap(groups, n_boot=500, seed=t)
    p = bootstrap_ci(np.concatenate(groups), n_boot=500, seed=t)
    assert h["value"] == pytest.approx(np.mean([g.mean() for g in groups]))
    hit_h += h["ci_low"] <= 0 <= h["ci_high"]
    hit_pooled += p["ci_low"] <= 0 <= p["ci_high"]
  assert hit_h / 200 >= 0.85 and hit_pooled / 200 <= 0.75
