"""`msm run` over generated worlds (`config.world_seeds`): one experiment per world in its own
workdir, one row per world taken from that world's own results, the distribution over worlds
and its checks, and a rerun that trains nothing."""

import json

import numpy as np
import pytest

from msm_io.errors import UserError
from msm_jax.config import ConfigError
from msm_jax.experiment import experiment_config
from msm_jax.experiment.worlds import distribution, paired, paired_markdown, run_worlds
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
  gaps = [0.5, 0.1, 0.7, 0.45]  # the mean with a Student-t interval over the 4 worlds (3 df)
  half = 3.182446305284263 * np.std(gaps, ddof=1) / 2
  assert dist["mean"] == pytest.approx(0.4375)
  assert dist["mean_ci"] == [pytest.approx(0.4375 - half), pytest.approx(0.4375 + half)]
  assert [ch["pass"] for ch in dist["checks"]] == [True, True, True]
  rows[1]["after"] = -0.2
  assert [ch["pass"] for ch in distribution(rows, c.checks)["checks"]] == [True, False, True]


def test_worlds_sweep_runs_each_world_on_its_own_and_reruns_cached(tmp_path, capsys):
  c = micro_config()
  c.spec_values = ()  # each world's own pair of values
  c.world_seeds = (3, 4)
  c.world_jobs = 2  # each world in a process of its own
  (tmp_path / "world-4").mkdir(parents=True)
  (tmp_path / "world-4" / "runs").write_text("not a directory")  # world 4 cannot train
  with pytest.raises(UserError, match=r"worlds failed: world 4 \(.*; log .*world-4/log\.txt\)"):
    run_worlds(c, tmp_path)
  assert "Traceback" in (tmp_path / "world-4" / "log.txt").read_text()
  assert (tmp_path / "world-3" / "results.json").exists()  # the other world went on
  assert not (tmp_path / "worlds.json").exists()  # no table from a sweep with a failed world
  (tmp_path / "world-4" / "runs").unlink()
  capsys.readouterr()
  out = run_worlds(c, tmp_path)  # world 3 cached, world 4 trained, each in its own process
  assert "[msm run] train" not in capsys.readouterr().out  # the table is read back, not trained
  assert "[msm run] train" in (tmp_path / "world-4" / "log.txt").read_text()
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
  c.world_jobs = 1
  c.compare_with = str(tmp_path / "worlds.json")  # the recipe against itself
  again = run_worlds(c, tmp_path)  # one after another, cached: the same stage keys and numbers
  assert "[msm run] train" not in capsys.readouterr().out
  assert again["rows"] == out["rows"]
  cmp = again["compare_with"]
  assert [w["difference"] for w in cmp["per_world"]] == [0.0, 0.0]
  assert cmp["mean_difference"] == 0.0 and cmp["higher"] == 0
  c.midtrain.learning_rate *= 3  # a midtraining candidate on the same worlds, paired
  c.reuse_from = str(tmp_path)  # with each world's base model and AFT alone taken from there
  c.world_jobs = 2  # in the worlds' own processes, as on a GPU
  cand = run_worlds(c, tmp_path / "cand")
  for s in (3, 4):
    log = (tmp_path / "cand" / f"world-{s}" / "log.txt").read_text()
    assert f"reuse base-s0: {tmp_path}/world-{s}/runs/base-s0-" in log
    assert "train base-s0" not in log and "train MSM-" in log
  assert [w["baseline"] for w in cand["compare_with"]["per_world"]] == gaps


def _row(seed, after, world=None, compare=("a", "b")):
  return {"world_seed": seed, "world": world or f"world-{seed}", "compare": list(compare),
          "after": after}


def test_paired_comparison_of_two_recipes_on_the_same_worlds():
  rows = [_row(1, 0.30), _row(2, 0.10), _row(3, 0.45)]
  base = [_row(1, 0.20), _row(2, 0.25), _row(3, 0.15)]
  cmp = paired(rows, base, "base/worlds.json")
  d = np.array([0.10, -0.15, 0.30])
  half = 4.302652729911275 * d.std(ddof=1) / np.sqrt(3)  # t(0.975, 2 df)
  assert [w["difference"] for w in cmp["per_world"]] == [pytest.approx(x) for x in d]
  assert cmp["mean_difference"] == pytest.approx(d.mean())
  assert cmp["ci"] == [pytest.approx(d.mean() - half), pytest.approx(d.mean() + half)]
  assert (cmp["higher"], cmp["worlds"]) == (2, 3)
  assert "higher in 2 of 3 worlds" in paired_markdown(cmp)
  base[1] = _row(2, 0.25, compare=("x", "y"))  # the generator changed under the baseline
  with pytest.raises(ConfigError, match=r"world seed 2 is world-2 \['x', 'y'\] there"):
    paired(rows, base, "base/worlds.json")


@pytest.mark.parametrize("content, match", [
    (None, r"config\.compare_with=.*not a worlds\.json"),
    ("{\"rows\": 3}", r"config\.compare_with=.*not a worlds\.json"),
    (json.dumps({"rows": [_row(3, 0.2)]}), r"has no rows for world seeds \[4\]")])
def test_a_bad_baseline_fails_before_any_work(tmp_path, content, match):
  base = tmp_path / "base.json"
  if content is not None:
    base.write_text(content)
  c = experiment_config()
  c.world_seeds, c.compare_with = (3, 4), str(base)
  work = tmp_path / "work"
  with pytest.raises(ConfigError, match=match):
    run_worlds(c, work)
  assert not work.exists()


def test_worlds_sweep_refuses_a_missing_reuse_dir_before_any_work(tmp_path):
  c = micro_config()
  c.spec_values, c.world_seeds, c.reuse_from = (), (3,), str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match=r"config\.reuse_from=.*nowhere.*not a directory"):
    run_worlds(c, tmp_path / "w")
  assert not (tmp_path / "w").exists()


def test_worlds_sweep_refuses_a_bad_job_count(tmp_path):
  c = experiment_config()
  c.world_seeds, c.world_jobs = (3,), 0
  with pytest.raises(ConfigError, match=r"config\.world_jobs=0"):
    run_worlds(c, tmp_path)


def test_worlds_sweep_refuses_named_spec_values_before_writing_anything(tmp_path):
  c = experiment_config()
  c.world_seeds, c.spec_values = (3,), ("america",)
  with pytest.raises(ConfigError, match=r"config\.spec_values=.*leave spec_values empty"):
    run_worlds(c, tmp_path)
  assert list(tmp_path.iterdir()) == []


def test_every_experiment_config_loads_and_tuning_worlds_never_include_report_worlds():
  from msm_jax.experiment.config import load_experiment
  from tests.helpers import REPO
  loaded = {p.stem: load_experiment(p) for p in sorted((REPO / "configs/experiments").glob("*.py"))}
  report, tuning = set(loaded["worlds"].world_seeds), set(loaded["worlds_tuning"].world_seeds)
  assert report == set(range(1, 9)) and len(tuning) == 30 and not report & tuning
  assert loaded["worlds_tuning"].world_jobs > 1 and not loaded["worlds_tuning"].compare_with
