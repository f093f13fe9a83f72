"""`msm run` over generated worlds (`config.world_seeds`): one experiment per world in its own
workdir, one row per world taken from that world's own results, the distribution over worlds
and its checks, and a rerun that trains nothing."""

import json

import numpy as np
import pytest

from msm_jax.config import ConfigError
from msm_jax.experiment import experiment_config
from msm_jax.experiment.worlds import distribution, run_worlds
from tests.test_experiment import micro_config, trained


def test_distribution_and_checks_from_rows():
  c = experiment_config()
  c.checks.update(gap=0.4, margin=0.1, worlds_share=0.75)
  rows = [{"after": g, "own_way": ok} for g, ok in
          [(0.5, True), (0.1, False), (0.7, True), (0.45, True)]]
  dist = distribution(rows, c.checks)
  assert dist["median"] == pytest.approx(0.475)
  assert (dist["q1"], dist["q3"]) == (pytest.approx(0.3625), pytest.approx(0.55))  # linear
  assert dist["share_positive"] == 1.0 and dist["share_own_way"] == 0.75
  assert [ch["pass"] for ch in dist["checks"]] == [True, True, True]
  rows[1]["after"] = -0.2
  assert [ch["pass"] for ch in distribution(rows, c.checks)["checks"]] == [True, False, True]


def test_worlds_sweep_runs_each_world_on_its_own_and_reruns_cached(tmp_path, capsys):
  c = micro_config()
  c.spec_values = ()  # each world's own pair of values
  c.world_seeds = (3, 4)
  out = run_worlds(c, tmp_path)
  assert sorted(p.name for p in (tmp_path / "worlds").iterdir()) == ["world-3.yaml",
                                                                       "world-4.yaml"]
  assert [r["world"] for r in out["rows"]] == ["world-3", "world-4"]
  for r in out["rows"]:  # each row is its world's own experiment, as that experiment saved it
    saved = json.loads((tmp_path / f"world-{r['world_seed']}" / "results.json").read_text())
    assert saved["world"] == r["world"] and saved["compare"] == r["compare"]
    assert r["after"] == pytest.approx(saved["gaps"]["after"]["mean"])
    a, b = r["compare"]
    assert set(r["vs_control"]) == {a, b}
    assert r["own_way"] == all(d >= c.checks.margin for d in r["vs_control"].values())
  gaps = [r["after"] for r in out["rows"]]
  assert out["distribution"]["median"] == pytest.approx(float(np.median(gaps)))
  assert json.loads((tmp_path / "worlds.json").read_text())["rows"] == out["rows"]
  assert "| world-3 |" in (tmp_path / "worlds.md").read_text()
  capsys.readouterr()
  again = run_worlds(c, tmp_path)  # cached: the same worlds, stage keys and numbers
  assert "[msm run] train" not in capsys.readouterr().out
  assert again["rows"] == out["rows"]


def test_worlds_sweep_refuses_named_spec_values_before_writing_anything(tmp_path):
  c = experiment_config()
  c.world_seeds, c.spec_values = (3,), ("america",)
  with pytest.raises(ConfigError, match=r"config\.spec_values=.*leave spec_values empty"):
    run_worlds(c, tmp_path)
  assert list(tmp_path.iterdir()) == []
