"""`msm run` on a micro config: every condition runs (the midtraining control included), a rerun
trains nothing and prints the same table, a deleted condition is the only one retrained, an
unfinished stage resumes, thresholds come from the config; stage keys are pinned to the values
they had before the experiment became a package; conditions render distinct labels.

The effect itself is not tested here (it needs minutes of training); see docs/experiment.md.
"""

import json
import shutil

import pytest

from msm_jax.config import ConfigError
from msm_jax.experiment import (Condition, experiment_config, load_experiment, run_experiment,
                                run_key, stage_config)
from msm_jax.experiment.orchestrate import REPO


def micro_config():
  c = experiment_config()
  c.spec_values = ("america",)
  c.data.update(chat_per_value=1, declared_per_value=1, neutral=1, fact_docs=30,
                character_docs=3, neutral_docs=2, assistant_docs=2, preference_chats=6,
                fact_chats=30, msm_docs=12, probe_pairs=2)
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
  assert trained(summary) == ["base-s0", "AFT-s0", "MSM-control-s0", "MSM-control+AFT-s0",
                              "MSM-america-s0", "MSM-america+AFT-s0"]
  assert [r["condition"] for r in summary["rows"]] == [
      "base", "AFT", "MSM-control", "MSM-control+AFT", "MSM-america", "MSM-america+AFT"]
  for name in ("results.json", "results.md", "results.png"):
    assert (workdir / name).stat().st_size > 0
  saved = json.loads((workdir / "results.json").read_text())
  row = saved["rows"][5]
  assert row["own_value"] == "america" and 0 <= row["pro_america"]["value"] <= 1
  assert row["pro_america"]["n"] == 112  # every held-out disagreeing pair, one seed
  assert "| MSM-america+AFT |" in (workdir / "results.md").read_text()
  assert saved["rows"][3]["control"] and saved["rows"][3]["own_value"] is None


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


def test_spec_variants_and_aft_sweep_reuse_the_shared_stages(first_run, tmp_path):
  workdir, _ = first_run
  c = micro_config()
  c.variants, c.sweep.aft_steps = ("explained", "bare_rules"), (1, c.finetune.steps)
  summary = run_experiment(c, workdir)  # trains only what the first run did not: the sweep
  # point at the default AFT budget is the AFT and MSM+AFT stages already there
  assert trained(summary) == ["MSM-america[bare_rules]-s0", "MSM-america[bare_rules]+AFT-s0",
                              "AFT@1-s0", "MSM-america+AFT@1-s0"]
  assert list((workdir / "runs").glob("MSM-america_bare_rules_-s0-*"))  # no brackets on disk
  assert "| bare_rules |" in summary["markdown"] and "| 1 |" in summary["markdown"]
  c.spec_values, c.sweep.aft_steps = ("america", "affordability"), ()
  copy = tmp_path / "exp"  # leaves the shared workdir as the other tests expect it
  shutil.copytree(workdir, copy)
  both = run_experiment(c, copy)  # bare rules are one spec: the second value reuses its runs
  assert set(trained(both)) == {"MSM-affordability-s0", "MSM-affordability+AFT-s0"}
  # each variant's gap after AFT, per seed: the explained one is the headline gap, and bare
  # rules (one run for both values) split nothing
  variants = both["variant_gaps"]
  assert variants["explained"]["per_seed"] == both["gaps"]["after"]["per_seed"]
  assert variants["bare_rules"]["per_seed"] == {0: 0.0}
  assert "| bare_rules | " in both["markdown"] and "t-interval over seeds | per seed |" in (
      both["markdown"])


def test_a_candidate_recipe_reuses_the_baselines_finished_stages(first_run, tmp_path):
  baseline, _ = first_run
  c = micro_config()
  c.midtrain.learning_rate *= 3  # a midtraining candidate: base and AFT alone are unchanged
  c.reuse_from = str(baseline)
  cand = tmp_path / "cand"
  summary = run_experiment(c, cand)
  assert trained(summary) == ["MSM-control-s0", "MSM-control+AFT-s0", "MSM-america-s0",
                              "MSM-america+AFT-s0"]
  assert [t["label"] for t in summary["timings"] if t.get("reused")] == ["base-s0", "AFT-s0"]
  rows, before = ({r["condition"]: r for r in json.loads((d / "results.json").read_text())["rows"]}
                  for d in (cand, baseline))
  for name in ("base", "AFT"):  # the very runs: the same numbers
    assert rows[name] == before[name]
  base = next((cand / "runs").glob("base-s0-*"))
  same = [f for f in base.rglob("*") if f.is_file()]
  assert same and all(f.stat().st_ino == (baseline / "runs" / base.name / f.relative_to(base))
                      .stat().st_ino for f in same)  # hard links, not copies
  assert not list((cand / "runs").glob(".*tmp"))  # no half-linked run left behind
  c.reuse_from = ""  # the candidate's workdir stands on its own afterwards
  assert trained(run_experiment(c, cand)) == []
  c.reuse_from = str(tmp_path / "nowhere")
  with pytest.raises(ConfigError, match=r"config\.reuse_from=.*nowhere.*not a directory"):
    run_experiment(c, tmp_path / "other")
  assert not (tmp_path / "other").exists()


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
  paths = sorted((REPO / "configs" / "experiments").glob("*.py"))
  assert paths
  for path in paths:
    cfg = load_experiment(path)
    assert cfg.world_seeds or (REPO / cfg.world).is_file(), path


def test_control_gaps_and_thresholds_come_from_the_config(first_run):
  workdir, _ = first_run
  c = micro_config()
  c.spec_values = ("america", "affordability")
  summary = run_experiment(c, workdir)  # the control and the america runs are the first run's
  assert trained(summary) == ["MSM-affordability-s0", "MSM-affordability+AFT-s0"]
  md = summary["markdown"]
  assert "| MSM-control+AFT |" in md and "| value | AFT alone | MSM-control + AFT |" in md
  checks = {ch["name"]: ch for ch in summary["checks"]}
  gaps = summary["gaps"]
  rate = {r["condition"]: r["mean_over_seeds"] for r in summary["rows"]}
  gap = rate["MSM-america+AFT"] - rate["MSM-affordability+AFT"]
  assert gaps["after"]["per_seed"][0] == pytest.approx(gap)
  assert gaps["interaction"]["mean"] == pytest.approx(gap - gaps["before"]["mean"])
  assert gaps["control_america"]["mean"] == pytest.approx(
      rate["MSM-america+AFT"] - rate["MSM-control+AFT"])
  assert gaps["control_affordability"]["mean"] == pytest.approx(  # own value: pro-affordability
      rate["MSM-control+AFT"] - rate["MSM-affordability+AFT"])
  over_seeds = checks["95% t-interval of the gap over seeds excludes 0"]
  assert over_seeds["pass"] is None  # one seed: not applicable, never a failure
  assert "| 95% t-interval of the gap over seeds excludes 0 | - | n/a |" in md
  assert "| interaction: gap after AFT - gap before AFT |" in md
  assert "MSM-affordability+AFT >= MSM-control+AFT + 0.10 (own value)" in checks
  c.checks.update(gap=-2.0, margin=-2.0, probes=0.0, aft_pairs=0.0)  # everything passes
  lenient = run_experiment(c, workdir)
  assert trained(lenient) == []
  names = [ch["name"] for ch in lenient["checks"] if ch["pass"] is not None]
  assert "mean(MSM-america+AFT) - mean(MSM-affordability+AFT) >= -2.00" in names
  assert "MSM-america+AFT >= MSM-control+AFT + -2.00 (own value)" in names
  assert "base model attribute probes >= 0.00" in names
  assert all(ch["pass"] for ch in lenient["checks"] if ch["name"] in names and
             "CI" not in ch["name"] and "every seed" not in ch["name"])


def _fake_data(tmp_path):
  """Fixed data files: the keys below depend only on the config -> stage mapping."""
  def f(name):
    q = tmp_path / name
    q.write_text(json.dumps({"text": name}) + "\n")
    return q
  return {"pretrain": f("pretrain.jsonl"), "replay": f("replay.jsonl"), "aft": f("aft.jsonl"),
          "msm": {(v, "explained", s): f(f"msm-{v}-{s}.jsonl")
                  for v in ("america", "affordability") for s in (0, 1)}}


def test_stage_keys_are_those_of_the_single_module_experiment(tmp_path):
  """Regression pin: cached runs in existing workdirs stay valid. The keys were computed on main
  (a4913d7, msm_jax/experiment.py before the split) by mirroring Experiment.run() with
  stage_config/stage_key on configs/experiments/cheese.py and the files of `_fake_data`.
  Seed 0's base is the shared base of before, so with independent bases (the default) every
  seed-0 stage keeps its key; later seeds change only through their own base."""
  from msm_jax.experiment.config import experiment_config as schema
  paths, exp = _fake_data(tmp_path), load_experiment(REPO / "configs/experiments/cheese.py")
  assert exp.independent_bases and schema().pretrain.seed == 0
  at = lambda c, s: run_key(exp, paths, c.at(s))
  assert at(Condition(), 0) == at(Condition(), None) == "285b6515215d"
  recipe = {c: at(c, 0) for c in (Condition(aft=True), Condition("america"))}
  # The recipe of before, with the body at the full rate after pretraining: the same keys, so
  # its runs stay cached; today's default (a tenth) gives every later stage a new key.
  exp.midtrain.body_lr_scale = exp.finetune.body_lr_scale = 1.0
  assert all(at(c, 0) != key for c, key in recipe.items())
  assert at(Condition(aft=True), 0) == "fda83817af09"
  assert at(Condition("america"), 0) == "d98c1fced9a3"
  assert at(Condition("america", aft=True), 0) == "d03316c10bc6"
  assert at(Condition("affordability"), 0) == "7cad40ec9e5b"
  assert at(Condition("affordability", aft=True), 0) == "9e0ac1db0341"
  exp.independent_bases = False
  assert at(Condition(aft=True), 1) == "85f37758d649"
  assert at(Condition("america", aft=True), 1) == "a41bb74cd8d6"
  assert at(Condition("affordability"), 1) == "fad7251b7e85"
  exp.independent_bases = True
  assert at(Condition(aft=True), 1) != "85f37758d649"  # seed 1's own base


def test_conditions_render_distinct_labels_and_know_their_parents():
  from msm_jax.experiment.conditions import main_conditions, sweep_conditions
  conds = (main_conditions(("america", "affordability"), ("explained", "general"), True) +
           sweep_conditions(("america", "affordability"), "explained", (4, 60)))
  labels = [c.label for c in conds]
  assert len(set(labels)) == len(labels) == len(set(conds))  # one label per condition
  assert labels[:4] == ["base", "AFT", "MSM-control", "MSM-control+AFT"]
  assert "MSM-america[general]+AFT" in labels and "MSM-affordability+AFT@60" in labels
  assert "AFT@4" in labels
  c = Condition("america", variant="general", aft=True, aft_steps=16)
  assert c.at(2).run_label == "MSM-america[general]+AFT@16-s2" and c.at(2).at(None) == c
  assert c.parent == Condition("america", variant="general")
  assert c.parent.parent == Condition() and Condition().parent is None
  assert Condition(control=True, aft=True).parent == Condition(control=True)
  for bad in (dict(value="america", control=True), dict(variant="general"),
              dict(aft_steps=4)):
    with pytest.raises(ValueError):
      Condition(**bad)


def test_control_corpus_is_about_the_assistant_and_gives_no_value(tmp_path):
  from data_pipelines.worlds import Sizes, WorldData
  from data_pipelines.worlds.world import fill
  c = micro_config()
  data = WorldData(REPO / c.world, tmp_path, Sizes(**c.data.to_dict()))
  w = data.world
  docs = [json.loads(line)["text"] for line in data.msm_control(0).read_text().splitlines()]
  assert len(docs) == c.data.msm_docs and all(w.assistant in d for d in docs)
  said = [fill(t, who=w.assistant) for v in w.values.values() for t in v.statements]
  assert not any(s in d for s in said for d in docs)  # no value's statement about Nova
  assert any(fill(t, who=w.assistant) in d for t in w.neutral.statements for d in docs)
  assert data.msm_control(1).read_text() != data.msm_control(0).read_text()  # seeded


def test_late_characters_are_midtrained_on_and_measured_after_midtraining(tmp_path):
  """`data.late_*_per_value` with `midtrain_late`: the late characters' material is a third
  share of every midtraining batch, and each midtrained model is asked about them."""
  from msm_jax.config import ConfigError
  from msm_jax.experiment.orchestrate import Experiment, last_stage
  c = micro_config()
  c.midtrain_late = 0.2
  with pytest.raises(ConfigError, match="config.midtrain_late=0.2"):
    Experiment(c, tmp_path / "none")  # a share, but nobody to fill it
  c.data.update(late_chat_per_value=1, late_declared_per_value=1)
  c.midtrain_replay = 0.8
  with pytest.raises(ConfigError, match="must keep a share"):
    Experiment(c, tmp_path / "none")
  c.midtrain_replay = 0.3
  summary = run_experiment(c, tmp_path / "exp")
  ex = Experiment(c, tmp_path / "exp")
  cfg, _ = last_stage(c, ex.paths, Condition("america").at(0))
  assert cfg.data.train[1:] == (str(ex.paths["replay"]), str(ex.paths["late"]))
  assert cfg.data.train_weights == pytest.approx((0.5, 0.3, 0.2))
  assert set(summary["late"]) == {"MSM-control", "MSM-america"}
  for rates in summary["late"].values():
    assert set(rates) == {"late-chat", "late-declared"}
    assert all(0 <= r <= 1 for r in rates.values())
  assert "Characters met only in midtraining" in summary["markdown"]


def test_name_transplant_reads_the_groups_off_the_corpus_and_refuses_split_names(first_run):
  """evals/name_transplant.py: its value groups are the roster's chat characters, and a name
  the tokenizer splits (the micro vocabulary) is refused rather than half-swapped."""
  from data_pipelines.worlds import Sizes, load_world
  from data_pipelines.worlds.corpora import roster
  from evals.name_transplant import chat_characters, transplant
  workdir, _ = first_run
  data_dir = next((workdir / "data").iterdir())
  ex_sizes = Sizes(**micro_config().data.to_dict())
  world = load_world(data_dir / "world.yaml")
  want = {v: sorted(c.name for c in roster(world, ex_sizes) if c.kind == "chat" and c.value == v)
          for v in world.compare}
  assert chat_characters(data_dir, world) == want and all(want.values())
  base = next((workdir / "runs").glob("base-s0-*"))
  with pytest.raises(ValueError, match=r"the assistant's name 'Nova' is \d+ tokens"):
    transplant(data_dir, base)
