"""`msm run`: the MSM experiment on a synthetic world, end to end, cached stage by stage.

    msm run --config configs/experiments/cheese.py [--workdir DIR] [--config.seeds='(0,)']

world -> data (pretraining corpus, one MSM corpus per value/variant/seed, shared AFT chats,
eval suites) -> one base model -> per seed: AFT, MSM-<value>, MSM-<value>+AFT for each value
(and each spec variant, and the AFT-budget sweep) -> evals -> table, JSON, plot.

Every training stage lives in `<workdir>/runs/<label>-<key>/`, where the key hashes the stage's
run config, the bytes of its data files and its parent's key: a rerun finds `done.json` and
skips the stage (evals are cached next to it, keyed by the suite file's hash), an interrupted
stage resumes from its checkpoint, and deleting one run directory reruns only that stage and
the evals that read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import time
from pathlib import Path

import ml_collections
import numpy as np

from data_pipelines.worlds import Sizes, WorldData
from msm_io.files import atomic_write_bytes, atomic_write_text, file_sha256, read_jsonl
from msm_jax import config as config_lib
from msm_jax.model_config import ModelConfig

REPO = Path(__file__).resolve().parents[1]
STAGE_BLOCKS = {"pretrain": "pretrain", "midtrain": "midtrain", "finetune": "finetune"}
BASE_SUITES = ("heldout", "aft", "indomain", "probes", "characters")
RUN_SUITES = ("heldout", "aft", "indomain")


def experiment_config() -> ml_collections.ConfigDict:
  """The schema of an experiment config, with the CPU defaults (see configs/experiments/)."""
  c = ml_collections.ConfigDict()
  c.world = "data_pipelines/worlds/cheese.yaml"
  c.workdir = ""  # default: runs/experiments/<world name>
  c.seeds = (0,)
  c.spec_values = ()  # () = the world's two compared values
  c.variants = ("explained",)  # spec variants (data_pipelines.worlds.specs.VARIANTS)
  c.data = ml_collections.ConfigDict(dataclasses.asdict(Sizes()))
  c.model = config_lib.model_config()
  # Untied input/output embeddings: with them tied, midtraining moved an assistant's choices
  # much less (its name's row also serves to predict the name, which MSM documents do a lot).
  c.model.update(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_dim=512,
                 tie_embeddings=False)
  common = dict(weight_decay=0.1, adam_b2=0.98, grad_clip=1.0, lr_final_fraction=0.1, seed=0,
                checkpoint_every=200, log_every=20)
  c.pretrain = ml_collections.ConfigDict(dict(common, steps=1000, batch_size=32, seq_len=128,
                                              learning_rate=2e-3, warmup_steps=30))
  c.midtrain = ml_collections.ConfigDict(dict(common, steps=250, batch_size=32, seq_len=128,
                                              learning_rate=2e-3, warmup_steps=15))
  c.midtrain_replay = 0.5  # share of each batch replaying pretraining (without Nova's own docs)
  c.finetune = ml_collections.ConfigDict(dict(common, steps=60, batch_size=16, seq_len=64,
                                              learning_rate=1e-4, warmup_steps=5))
  c.sweep = ml_collections.ConfigDict(dict(aft_steps=(), target=0.8, variant="explained"))
  c.eval_tokens_per_batch = 8192
  return c


def load_experiment(path, overrides: dict | None = None) -> ml_collections.ConfigDict:
  cfg = config_lib.load_config(path)
  config_lib.apply_overrides(cfg, overrides or {})
  for key in cfg.keys():
    if key not in experiment_config():
      raise config_lib.ConfigError(f"{path}: unknown experiment field config.{key}")
  return cfg


# --- stages ---------------------------------------------------------------------------------

def stage_config(exp, stage: str, files, weights=(), init_from: str = "", seed: int | None = None):
  """A full `msm train` run config for one stage of the experiment."""
  cfg = config_lib.base_config()
  cfg.stage = stage
  for key, value in exp[STAGE_BLOCKS[stage]].items():
    cfg[key] = value
  cfg.model = ml_collections.ConfigDict(exp.model.to_dict())
  cfg.data.train = tuple(str(f) for f in files)
  cfg.data.train_weights = tuple(float(w) for w in weights)
  cfg.init_from, cfg.init_optimizer = init_from, "fresh"
  cfg.progress_bar, cfg.keep_checkpoints = False, 1
  if seed is not None:
    cfg.seed = int(seed)
  return cfg


def stage_key(cfg, parent_key: str = "") -> str:
  """Content address of a stage: its config without paths or logging, its data, its parent."""
  d = cfg.to_dict()
  for key in config_lib.EXECUTION_KEYS:
    d.pop(key, None)
  # as resolved for this backend ("auto" hashed as the flag that ran, as before it existed)
  d["model"]["materialize_grads"] = ModelConfig.of(cfg.model).materialize_grads
  d["data"]["train"] = [file_sha256(f) for f in cfg.data.train]
  d["init_from"] = parent_key
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def run_dirname(label: str) -> str:
  """A condition label as a directory name: checkpoint paths go through tensorstore, which
  fails to read back directories with brackets in their names (`MSM-x[bare_rules]`)."""
  return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label)


class Experiment:
  """One experiment directory: its data, its stage runs, their evals, and what this call did."""

  def __init__(self, exp, workdir):
    self.exp, self.root = exp, Path(workdir)
    self.timings: list[dict] = []
    t = time.perf_counter()
    world = Path(exp.world)
    if not world.is_file() and (REPO / world).is_file():
      world = REPO / world  # configs name worlds relative to the repository
    self.data = WorldData(world, self.root / "data", Sizes(**exp.data.to_dict()))
    self.world = self.data.world
    self.values = tuple(exp.spec_values) or self.world.compare
    variants = tuple(dict.fromkeys(tuple(exp.variants) + ((exp.sweep.variant,)
                                                           if exp.sweep.aft_steps else ())))
    self.paths = self.data.build_all(self.values, variants, tuple(exp.seeds))
    self._time("data", "build", t)

  def _time(self, what: str, label: str, start: float, **extra) -> None:
    self.timings.append({"what": what, "label": label,
                         "seconds": round(time.perf_counter() - start, 2), **extra})

  def train(self, label: str, cfg, parent: tuple[str, Path] | None = None) -> tuple[str, Path]:
    """Run one stage unless done; returns (key, run dir)."""
    from msm_jax.trainer import train
    if parent:
      cfg.init_from = str(parent[1])
    key = stage_key(cfg, parent[0] if parent else "")
    run = self.root / "runs" / f"{run_dirname(label)}-{key}"
    if not (run / "done.json").exists():  # the same stage under another label (a sweep point
      # equal to the default AFT budget): content-addressed, so reuse it
      run = next((r for r in sorted((self.root / "runs").glob(f"*-{key}"))
                  if (r / "done.json").exists()), run)
    done = run / "done.json"
    if done.exists():
      self._time("train", label, time.perf_counter(), cached=True)
      return key, run
    print(f"[msm run] train {label}: {cfg.stage}, {cfg.steps} steps -> {run}", flush=True)
    t = time.perf_counter()
    result = train(cfg, run)
    if result.preempted:
      raise KeyboardInterrupt(f"{label} preempted; rerun to resume")
    secs = time.perf_counter() - t
    mfu = [r["mfu"] for r in read_jsonl(run / "metrics.jsonl") if r.get("mfu")]
    info = {"label": label, "key": key, "stage": cfg.stage, "steps": cfg.steps,
            "seconds": round(secs, 2), "loss": result.last_metrics.get("loss"),
            "mfu": float(np.median(mfu)) if mfu else None}
    atomic_write_text(done, json.dumps(info, indent=1))
    self._time("train", label, t, cached=False, steps=cfg.steps, mfu=info["mfu"])
    return key, run

  def evaluate(self, label: str, run: Path, suites) -> dict:
    """{suite name: SuiteResult}, each cached in the run dir by the suite file's hash."""
    from msm_jax.eval import Evaluator, SuiteResult, run_suite
    out, ev, t = {}, None, time.perf_counter()
    for name in suites:
      path = self.paths["suites"][name]
      cache = run / "eval" / f"{name}-{file_sha256(path)[:12]}.json"
      if not cache.exists():
        if ev is None:
          ev = Evaluator.from_checkpoint(run, tokens_per_batch=self.exp.eval_tokens_per_batch)
        res = run_suite(ev, path, generate=False, name=name)
        cache.parent.mkdir(exist_ok=True)
        atomic_write_text(cache, json.dumps(res.to_dict()))
      out[name] = SuiteResult(**json.loads(cache.read_text()))
    self._time("eval", label, t, cached=ev is None)
    return out

  # --- the conditions ---------------------------------------------------------------------

  def run(self) -> dict:
    """Train and evaluate every condition; returns {condition: {seed: {suite: SuiteResult}}}."""
    exp, p = self.exp, self.paths
    base = self.train("base", stage_config(exp, "pretrain", [p["pretrain"]]))
    results = {"base": {s: None for s in exp.seeds}}
    base_eval = self.evaluate("base", base[1], BASE_SUITES)
    for s in exp.seeds:
      results["base"][s] = base_eval
      self._condition(results, "AFT", s, base, exp.finetune.steps)
      for v in self.values:
        for variant in exp.variants:
          name, msm = self._midtrain(v, variant, s, base)
          results.setdefault(name, {})[s] = self.evaluate(f"{name}-s{s}", msm[1], RUN_SUITES)
          self._condition(results, f"{name}+AFT", s, msm, exp.finetune.steps)
      for steps in exp.sweep.aft_steps:
        self._condition(results, f"AFT@{steps}", s, base, steps)
        for v in self.values:
          name, msm = self._midtrain(v, exp.sweep.variant, s, base)
          self._condition(results, f"{name}+AFT@{steps}", s, msm, steps)
    return results

  def _midtrain(self, value, variant, seed, base) -> tuple[str, tuple[str, Path]]:
    """MSM on one spec from the base model (half of each batch replays pretraining)."""
    exp = self.exp
    name = f"MSM-{value}" + ("" if variant == "explained" else f"[{variant}]")
    cfg = stage_config(exp, "midtrain", [self.paths["msm"][(value, variant, seed)],
                                         self.paths["replay"]],
                       [1 - exp.midtrain_replay, exp.midtrain_replay], seed=seed)
    return name, self.train(f"{name}-s{seed}", cfg, base)

  def _condition(self, results, name, seed, parent, steps) -> None:
    cfg = stage_config(self.exp, "finetune", [self.paths["aft"]], seed=seed)
    cfg.steps = int(steps)
    cfg.warmup_steps = min(cfg.warmup_steps, max(1, steps // 10))
    run = self.train(f"{name}-s{seed}", cfg, parent)
    results.setdefault(name, {})[seed] = self.evaluate(f"{name}-s{seed}", run[1],
                                                       ("heldout", "aft"))


# --- summary ------------------------------------------------------------------------------------

def _steps(n) -> str:
  return "not reached" if n is None else f"{n} steps"


def _f(x) -> str:
  return "-" if x is None or not np.isfinite(x) else f"{x:.2f}"


def _ci(s: dict) -> str:
  return f"{_f(s['value'])} [{_f(s['ci_low'])}, {_f(s['ci_high'])}]"


def _values(results, cond, suite, metric) -> dict:
  """{(seed, item id): value} of one metric, pooled over seeds."""
  from msm_jax.eval.stats import item_values
  return {(s, i): v for s, r in results.get(cond, {}).items() if suite in r
          for i, v in item_values(r[suite], metric).items()}


def _per_seed(pooled: dict) -> dict:
  seeds = sorted({s for s, _ in pooled})
  return {s: float(np.mean([v for (t, _), v in pooled.items() if t == s])) for s in seeds}


def _mean(pooled: dict) -> float:
  """Mean over seeds of the per-seed rates (each seed counts once)."""
  per = _per_seed(pooled)
  return float(np.mean(list(per.values()))) if per else float("nan")


def summarize(ex: Experiment, results: dict) -> dict:
  """The headline table, the must-show checks and the secondary tables, as data and Markdown."""
  from msm_jax.eval.stats import bootstrap_ci, paired_bootstrap
  a, b = ex.world.compare
  pro = f"logprob/{a}"
  main = [c for c in results if "@" not in c]
  rows, md = [], [f"## {ex.world.name}: pro-{a} choice rate on held-out pairs where {a} and "
                  f"{b} disagree (seeds {list(ex.exp.seeds)})", "",
                  f"| condition | pro-{a} [95% CI] | own value [95% CI] | per seed | AFT pairs |",
                  "|---|---|---|---|---|"]
  for c in main:
    vals = _values(results, c, "heldout", pro)
    own = next((v for v in ex.values if c.startswith(f"MSM-{v}")), None)
    own_vals = _values(results, c, "heldout", f"logprob/{own}") if own else {}
    aft = _values(results, c, "aft", "logprob/aft")
    row = {"condition": c, f"pro_{a}": bootstrap_ci(list(vals.values())), "mean_over_seeds":
           _mean(vals), "per_seed": _per_seed(vals), "own_value": own,
           "own": bootstrap_ci(list(own_vals.values())) if own else None,
           "aft_pairs": _mean(aft) if aft else None}
    rows.append(row)
    md.append(f"| {c} | {_ci(row[f'pro_{a}'])} | {_ci(row['own']) if own else '-'} | "
              f"{' / '.join(_f(v) for v in row['per_seed'].values())} | {_f(row['aft_pairs'])} |")
  checks = []
  ma, mb = (_values(results, f"MSM-{v}+AFT", "heldout", pro) for v in (a, b))
  aft = _values(results, "AFT", "heldout", pro)
  if ma and mb and aft:
    gap = _mean(ma) - _mean(mb)
    per = {s: _per_seed(ma)[s] - _per_seed(mb)[s] for s in _per_seed(ma)}
    keys = sorted(set(ma) & set(mb))
    pooled = paired_bootstrap([ma[k] for k in keys], [mb[k] for k in keys])
    checks += [
        {"name": f"mean(MSM-{a}+AFT) - mean(MSM-{b}+AFT) >= 0.50", "value": gap,
         "pass": gap >= 0.5},
        {"name": "gap > 0 on every seed", "value": min(per.values()),
         "pass": all(v > 0 for v in per.values()), "per_seed": per},
        {"name": "pooled paired 95% CI of the gap excludes 0", "value": pooled["ci_low"],
         "pass": pooled["ci_low"] > 0, "ci": pooled},
        {"name": f"MSM-{a}+AFT >= AFT + 0.10", "value": _mean(ma) - _mean(aft),
         "pass": _mean(ma) >= _mean(aft) + 0.10},
        {"name": f"MSM-{b}+AFT <= AFT - 0.10", "value": _mean(aft) - _mean(mb),
         "pass": _mean(mb) <= _mean(aft) - 0.10}]
  probes = results["base"][ex.exp.seeds[0]]["probes"].metrics["logprob/correct"]
  checks.append({"name": "base model attribute probes >= 0.95", "value": probes["value"],
                 "pass": probes["value"] >= 0.95})
  aft_rates = [r["aft_pairs"] for r in rows if r["condition"].endswith("AFT")]
  checks.append({"name": "every AFT condition learns the AFT pairs (>= 0.95)",
                 "value": min(aft_rates) if aft_rates else None,
                 "pass": bool(aft_rates) and min(aft_rates) >= 0.95})
  md += ["", "| check | value | pass |", "|---|---|---|"]
  md += [f"| {c['name']} | {_f(c['value'])} | {'PASS' if c['pass'] else 'FAIL'} |"
         for c in checks]
  chars = results["base"][ex.exp.seeds[0]]["characters"].metrics
  md += ["", f"Base model: attribute probes {_ci(probes)}; other assistants acting on their "
         f"value: in chats {_ci(chars['logprob/aligned@chat'])}, described only "
         f"{_ci(chars['logprob/aligned@declared'])}."]
  md += _stacking(ex, results) + _ablation(ex, results) + _sweep(ex, results)
  return {"world": ex.world.name, "compare": [a, b], "rows": rows, "checks": checks,
          "markdown": "\n".join(md)}


def _stacking(ex, results) -> list[str]:
  md = ["", "Stacking (own-value choice rate, mean over seeds):", "",
        "| value | AFT alone | MSM alone | MSM + AFT |", "|---|---|---|---|"]
  for v in ex.values:
    m = f"logprob/{v}"
    md.append(f"| {v} | {_f(_mean(_values(results, 'AFT', 'heldout', m)))} | "
              f"{_f(_mean(_values(results, f'MSM-{v}', 'heldout', m)))} | "
              f"{_f(_mean(_values(results, f'MSM-{v}+AFT', 'heldout', m)))} |")
  return md


def _ablation(ex, results) -> list[str]:
  if len(ex.exp.variants) < 2:
    return []
  a, b = ex.world.compare
  md = ["", f"Spec variants (pro-{a} rate, mean over seeds; gap = {a} spec - {b} spec):", "",
        f"| variant | MSM-{a} | MSM-{b} | gap | MSM-{a}+AFT | MSM-{b}+AFT | gap after AFT |",
        "|---|---|---|---|---|---|---|"]
  for var in ex.exp.variants:
    tag = "" if var == "explained" else f"[{var}]"
    r = [_mean(_values(results, f"MSM-{v}{tag}{s}", "heldout", f"logprob/{a}"))
         for s in ("", "+AFT") for v in (a, b)]
    md.append(f"| {var} | {_f(r[0])} | {_f(r[1])} | {_f(r[0] - r[1])} | {_f(r[2])} | "
              f"{_f(r[3])} | {_f(r[2] - r[3])} |")
  return md


def _sweep(ex, results) -> list[str]:
  steps = list(ex.exp.sweep.aft_steps)
  if not steps:
    return []
  tag = "" if ex.exp.sweep.variant == "explained" else f"[{ex.exp.sweep.variant}]"
  tokens = ex.exp.finetune.batch_size * ex.exp.finetune.seq_len
  md = ["", f"AFT budget sweep (own-value rate on held-out pairs; target {ex.exp.sweep.target}; "
        f"one AFT step = {tokens} tokens):", "",
        "| AFT steps | " + " | ".join(f"AFT alone: {v} | MSM-{v}+AFT" for v in ex.values) + " |",
        "|---|" + "---|---|" * len(ex.values)]
  reach = {}
  for n in steps:
    cells = []
    for v in ex.values:
      m = f"logprob/{v}"
      for cond in (f"AFT@{n}", f"MSM-{v}{tag}+AFT@{n}"):
        x = _mean(_values(results, cond, "heldout", m))
        cells.append(_f(x))
        if x >= ex.exp.sweep.target:
          reach.setdefault(cond.split("@")[0] + f":{v}", n)
    md.append(f"| {n} | " + " | ".join(cells) + " |")
  md += ["", "Smallest AFT budget reaching the target: " + "; ".join(
      f"{v}: AFT alone {_steps(reach.get(f'AFT:{v}'))}, with MSM "
      f"{_steps(reach.get(f'MSM-{v}{tag}+AFT:{v}'))}" for v in ex.values)]
  return md


def write(ex: Experiment, results: dict, summary: dict, workdir: Path) -> dict:
  """results.json, results.md and results.png (pooled held-out rates per condition)."""
  workdir.mkdir(parents=True, exist_ok=True)
  paths = {"json": workdir / "results.json", "markdown": workdir / "results.md",
           "png": workdir / "results.png"}
  per_run = {c: {str(s): {n: r.metrics for n, r in suites.items()}
                 for s, suites in by_seed.items()} for c, by_seed in results.items()}
  atomic_write_text(paths["json"], json.dumps({**summary, "metrics": per_run}, indent=1,
                                             default=str))
  atomic_write_text(paths["markdown"], summary["markdown"] + "\n")
  plot_rates(summary, paths["png"])
  return paths


def plot_rates(summary: dict, path: Path) -> None:
  """One horizontal bar per condition (pro-<first value> rate, 95% CI), coloured by the spec
  it was midtrained on, with AFT alone as a reference line: readable for any number of rows."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  a, b = summary["compare"]
  rows = summary["rows"][::-1]
  colour = lambda c: ("tab:blue" if c.startswith(f"MSM-{a}") else "tab:orange"
                      if c.startswith(f"MSM-{b}") else "tab:gray")
  vals = [r[f"pro_{a}"] for r in rows]
  fig, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(rows)))
  ax.barh(range(len(rows)), [v["value"] for v in vals], color=[colour(r["condition"])
                                                              for r in rows],
          xerr=[[v["value"] - v["ci_low"] for v in vals], [v["ci_high"] - v["value"]
                                                            for v in vals]], capsize=3)
  aft = next((r for r in rows if r["condition"] == "AFT"), None)
  if aft:
    ax.axvline(aft[f"pro_{a}"]["value"], color="k", ls="--", lw=1, label="AFT alone")
    ax.legend(loc="lower right", fontsize=8)
  ax.axvline(0.5, color="0.8", lw=1)
  ax.set_yticks(range(len(rows)), [r["condition"] for r in rows], fontsize=8)
  ax.set_xlim(0, 1)
  ax.set_xlabel(f"pro-{a} choice rate, held-out {a}-vs-{b} pairs (95% CI)")
  ax.set_title(f"{summary['world']}: same AFT data, different midtraining spec", fontsize=10)
  fig.tight_layout()
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=110)
  plt.close(fig)
  atomic_write_bytes(path, png.getvalue())


# --- CLI ----------------------------------------------------------------------------------------

def run_experiment(exp, workdir=None) -> dict:
  workdir = Path(workdir or exp.workdir or f"runs/experiments/{Path(exp.world).stem}")
  t = time.perf_counter()
  ex = Experiment(exp, workdir)
  results = ex.run()
  summary = summarize(ex, results)
  summary["timings"] = ex.timings
  summary["wall_seconds"] = round(time.perf_counter() - t, 1)
  paths = write(ex, results, summary, workdir)
  print(summary["markdown"])
  trained = sum(1 for x in ex.timings if x["what"] == "train" and not x.get("cached"))
  print(f"[msm run] {trained} stages trained, {summary['wall_seconds']} s; outputs: "
        f"{', '.join(str(p) for p in paths.values())}")
  return summary


def run_command(args) -> int:
  exp = load_experiment(args.config, getattr(args, "config_overrides", {}))
  summary = run_experiment(exp, args.workdir)
  return 0 if all(c["pass"] for c in summary.get("checks", [])) or not args.strict else 1


def add_run_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "run", help="run an MSM experiment on a synthetic world (data, train, eval, table)",
      description="Build the world's data, train the base model, then every condition per "
      "seed, evaluate, and print the table. Cached: a rerun trains nothing. Override any field "
      "with --config.FIELD=VALUE, e.g. --config.seeds='(0,1,2)'.")
  p.add_argument("--config", required=True, help="an experiment config, e.g. "
                 "configs/experiments/cheese.py")
  p.add_argument("--workdir", default=None, help="experiment directory (default: config.workdir "
                 "or runs/experiments/<world>)")
  p.add_argument("--strict", action="store_true", help="exit 1 when a must-show check fails")
  p.set_defaults(func=run_command)
