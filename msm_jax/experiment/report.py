"""`msm run`: the experiment end to end (data, stages, evals, summary) and its outputs
(results.json, results.md, results.png), plus the CLI entry."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from msm_jax.experiment.config import load_experiment
from msm_io.files import atomic_write_bytes, atomic_write_text
from msm_jax.experiment.orchestrate import Experiment
from msm_jax.experiment.summary import summarize


def write(ex: Experiment, results: dict, summary: dict, workdir: Path) -> dict:
  """results.json, results.md and results.png (pooled held-out rates per condition)."""
  workdir.mkdir(parents=True, exist_ok=True)
  paths = {"json": workdir / "results.json", "markdown": workdir / "results.md",
           "png": workdir / "results.png"}
  per_run = {c.label: {str(s): {n: r.metrics for n, r in suites.items()}
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
  colours = {a: "tab:blue", b: "tab:orange"}
  colour = lambda r: ("tab:green" if r.get("control") else
                      colours.get(r["own_value"], "tab:gray"))
  vals = [r[f"pro_{a}"] for r in rows]
  fig, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(rows)))
  ax.barh(range(len(rows)), [v["value"] for v in vals], color=[colour(r) for r in rows],
          xerr=[[v["value"] - v["ci_low"] for v in vals], [v["ci_high"] - v["value"]
                                                            for v in vals]], capsize=3)
  aft = next((r for r in rows if r["aft"] and not r["own_value"] and not r.get("control")), None)
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
  if exp.world_seeds:
    from msm_jax.experiment.worlds import run_worlds
    summary = run_worlds(exp, Path(args.workdir or exp.workdir or "runs/experiments/worlds"))
  else:
    summary = run_experiment(exp, args.workdir)
  checks = [c["pass"] for c in summary.get("checks", []) if c["pass"] is not None]
  return 0 if all(checks) or not args.strict else 1


def add_run_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "run", help="run an MSM experiment on a synthetic world (data, train, eval, table)",
      description="Build the world's data, train the base model(s), then every condition per "
      "seed, evaluate, and print the table. Cached: a rerun trains nothing. Override any field "
      "with --config.FIELD=VALUE, e.g. --config.seeds='(0,1,2)'.")
  p.add_argument("--config", required=True, help="an experiment config, e.g. "
                 "configs/experiments/cheese.py")
  p.add_argument("--workdir", default=None, help="experiment directory (default: config.workdir "
                 "or runs/experiments/<world>)")
  p.add_argument("--strict", action="store_true", help="exit 1 when a must-show check fails")
  p.set_defaults(func=run_command)
