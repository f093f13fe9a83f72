"""`msm run` on a micro config: every condition runs, a rerun trains nothing and prints the same
table, a deleted condition is the only one retrained, an unfinished stage resumes.

The effect itself is not tested here (it needs minutes of training); see docs/experiment.md.
"""

import json
import shutil

import pytest

from msm_jax.experiment import experiment_config, load_experiment, run_experiment, stage_config


def micro_config():
  c = experiment_config()
  c.spec_values = ("america",)
  c.data.update(chat_per_value=1, declared_per_value=1, neutral=1, fact_docs=30,
                character_docs=3, neutral_docs=2, preference_chats=6, fact_chats=30, msm_docs=12,
                probe_pairs=2)
  c.model.update(vocab_size=384, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, mlp_dim=64)
  for block, steps in ((c.pretrain, 3), (c.midtrain, 2), (c.finetune, 2)):
    block.update(steps=steps, batch_size=8, seq_len=32, warmup_steps=1)
  c.eval_tokens_per_batch = 1024
  return c


def trained(summary) -> list[str]:
  return [t["label"] for t in summary["timings"] if t["what"] == "train" and not t["cached"]]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("exp")
  return workdir, run_experiment(micro_config(), workdir)


def test_every_condition_runs_and_reports(first_run):
  workdir, summary = first_run
  assert trained(summary) == ["base", "AFT-s0", "MSM-america-s0", "MSM-america+AFT-s0"]
  assert [r["condition"] for r in summary["rows"]] == ["base", "AFT", "MSM-america",
                                                      "MSM-america+AFT"]
  for name in ("results.json", "results.md", "results.png"):
    assert (workdir / name).stat().st_size > 0
  saved = json.loads((workdir / "results.json").read_text())
  row = saved["rows"][3]
  assert row["own_value"] == "america" and 0 <= row["pro_america"]["value"] <= 1
  assert row["pro_america"]["n"] == 112  # every held-out disagreeing pair, one seed
  assert "| MSM-america+AFT |" in (workdir / "results.md").read_text()


def test_rerun_is_cached_and_deleting_a_condition_reruns_only_it(first_run):
  workdir, summary = first_run
  again = run_experiment(micro_config(), workdir)
  assert trained(again) == [] and again["markdown"] == summary["markdown"]
  runs = {p.name.rsplit("-", 1)[0]: p for p in (workdir / "runs").iterdir()}
  shutil.rmtree(runs["AFT-s0"])
  (runs["MSM-america+AFT-s0"] / "done.json").unlink()  # as if interrupted after its checkpoint
  third = run_experiment(micro_config(), workdir)
  assert trained(third) == ["AFT-s0", "MSM-america+AFT-s0"]
  resumed = [json.loads(l) for l in open(runs["MSM-america+AFT-s0"] / "metrics.jsonl")]
  assert max(r["step"] for r in resumed) == 2  # resumed at its last step, not retrained further
  assert third["markdown"] == summary["markdown"]


def test_spec_variants_and_aft_sweep_reuse_the_shared_stages(first_run):
  workdir, _ = first_run
  c = micro_config()
  c.variants, c.sweep.aft_steps = ("explained", "bare_rules"), (1, c.finetune.steps)
  summary = run_experiment(c, workdir)  # trains only what the first run did not: the sweep
  # point at the default AFT budget is the AFT and MSM+AFT stages already there
  assert trained(summary) == ["MSM-america[bare_rules]-s0", "MSM-america[bare_rules]+AFT-s0",
                              "AFT@1-s0", "MSM-america+AFT@1-s0"]
  assert list((workdir / "runs").glob("MSM-america_bare_rules_-s0-*"))  # no brackets on disk
  assert "| bare_rules |" in summary["markdown"] and "| 1 |" in summary["markdown"]


def test_stage_keys_follow_content(tmp_path):
  from msm_jax.experiment import stage_key
  data = tmp_path / "a.jsonl"
  data.write_text('{"text": "x"}\n')
  exp = micro_config()
  key = stage_key(stage_config(exp, "pretrain", [data]))
  cfg = stage_config(exp, "pretrain", [data])
  cfg.log_every = 7  # logging is not content
  assert stage_key(cfg) == key
  cfg.learning_rate = 0.5
  assert stage_key(cfg) != key
  data.write_text('{"text": "y"}\n')
  assert stage_key(stage_config(exp, "pretrain", [data])) != key
  assert stage_key(stage_config(exp, "pretrain", [data]), "parent") != stage_key(
      stage_config(exp, "pretrain", [data]))


def test_shipped_configs_load():
  from msm_jax.experiment import REPO
  paths = sorted((REPO / "configs" / "experiments").glob("*.py"))
  assert paths
  for path in paths:
    cfg = load_experiment(path)
    assert (REPO / cfg.world).is_file(), path
