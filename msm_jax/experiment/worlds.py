"""The recipe over many generated worlds: one experiment per world, then the distribution.

    msm run --config configs/experiments/worlds.py          # config.world_seeds: worlds 1-8

A recipe tuned on one world says little about a world a researcher writes. `config.world_seeds`
names generated worlds (`msm world generate --seed N`); each is written to
`<workdir>/worlds/world-<N>.yaml` and run as its own experiment in `<workdir>/world-<N>/` (its
own base model(s), cached stage by stage like any `msm run`), so worlds are independent samples
of the recipe. `config.world_jobs` > 1 runs that many worlds at once, each in a process of its
own (one GPU holds many of these small models), then reads the table back from the cache. The
report is one row per world and the distribution over worlds: the median and
quartiles of the gap after AFT, the share of worlds with a positive gap, and the share in which
each spec moves the assistant its own way against the midtraining control by `checks.margin`.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import json
import multiprocessing
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from data_pipelines.worlds.generate import write_worlds
from msm_io.files import atomic_write_text
from msm_io.errors import UserError
from msm_jax.config import ConfigError
from msm_jax.eval.stats import t_interval
from msm_jax.experiment.orchestrate import reuse_runs

MEASURES = ("after", "before", "interaction", "after_novel")


def world_file(workdir: Path, seed: int) -> Path:
  """The generated world `seed` under `workdir/worlds/` (the generator is deterministic: a rerun
  writes the same bytes, so the experiment's data and stage keys are unchanged)."""
  return write_worlds(workdir / "worlds" / f"world-{seed}.yaml", int(seed))[0]


def world_row(seed: int, summary: dict, margin: float) -> dict:
  """One world's figures (means over its experiment seeds) from its `summarize` output."""
  a, b = summary["compare"]
  gaps = summary["gaps"]
  row = {"world_seed": int(seed), "world": summary["world"], "compare": [a, b]}
  for key in MEASURES:
    row[key] = gaps[key]["mean"] if key in gaps else None
  # seed keys as strings, as they read back from worlds.json
  row["per_seed_after"] = {str(s): g for s, g in gaps["after"]["per_seed"].items()}
  row["vs_control"] = {v: gaps[f"control_{v}"]["mean"] for v in (a, b) if f"control_{v}" in gaps}
  row["own_way"] = (len(row["vs_control"]) == 2 and
                    all(d >= margin for d in row["vs_control"].values()))
  return row


def _q(xs, q) -> float:
  return float(np.quantile(xs, q)) if xs else float("nan")


def distribution(rows: list[dict], checks) -> dict:
  """Median and quartiles of the gap after AFT over worlds, the shares, and the checks."""
  gaps = [r["after"] for r in rows]
  own = [r["own_way"] for r in rows]
  mean = t_interval(gaps)  # worlds are independent samples: each its own base model
  dist = {"worlds": len(rows), "median": _q(gaps, 0.5), "q1": _q(gaps, 0.25),
          "mean": mean["value"], "mean_ci": [mean["ci_low"], mean["ci_high"]],
          "q3": _q(gaps, 0.75), "min": min(gaps, default=float("nan")),
          "share_positive": float(np.mean([g > 0 for g in gaps])) if gaps else float("nan"),
          "share_own_way": float(np.mean(own)) if own else float("nan")}
  dist["checks"] = [
      {"name": f"median gap after AFT over worlds >= {checks.gap:.2f}", "value": dist["median"],
       "pass": bool(dist["median"] >= checks.gap)},
      {"name": "gap after AFT > 0 in every world", "value": dist["min"],
       "pass": bool(dist["share_positive"] == 1.0)},
      {"name": f"share of worlds where each spec beats the control its own way by >= "
               f"{checks.margin:.2f} is >= {checks.worlds_share:.2f}",
       "value": dist["share_own_way"], "pass": bool(dist["share_own_way"] >= checks.worlds_share)}]
  return dist


def _f(x) -> str:
  return "-" if x is None or not np.isfinite(x) else f"{x:+.2f}"


def markdown(rows: list[dict], dist: dict, exp) -> str:
  md = [f"## The recipe over {dist['worlds']} generated world{'s' * (dist['worlds'] != 1)} "
        f"(world seeds "
        f"{[r['world_seed'] for r in rows]}; experiment seeds {list(exp.seeds)}; each world its "
        "own base model)", "",
        "| world | values (a vs b) | gap after AFT | gap before AFT | interaction | "
        "a vs control | b vs control | held-back phrasings | own way |",
        "|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    a, b = r["compare"]
    vc = r["vs_control"]
    md.append(f"| {r['world']} | {a} vs {b} | {_f(r['after'])} | {_f(r['before'])} | "
              f"{_f(r['interaction'])} | {_f(vc.get(a))} | {_f(vc.get(b))} | "
              f"{_f(r['after_novel'])} | {'yes' if r['own_way'] else 'no'} |")
  md += ["", f"Gap after AFT over worlds: median {_f(dist['median'])}, quartiles "
         f"[{_f(dist['q1'])}, {_f(dist['q3'])}], min {_f(dist['min'])}; mean "
         f"{_f(dist['mean'])}, 95% t-interval over worlds [{_f(dist['mean_ci'][0])}, "
         f"{_f(dist['mean_ci'][1])}]; positive in "
         f"{dist['share_positive']:.0%} of worlds; each spec beats the control its own way in "
         f"{dist['share_own_way']:.0%}.", "", "| check | value | pass |", "|---|---|---|"]
  md += [f"| {c['name']} | {_f(c['value']).lstrip('+')} | {'PASS' if c['pass'] else 'FAIL'} |"
         for c in dist["checks"]]
  return "\n".join(md)


def one_world(exp, workdir: Path, seed: int):
  """The experiment config of world `seed` alone (its world file written under `workdir`)."""
  one = copy.deepcopy(exp)
  one.world_seeds = ()
  one.world_jobs = 1
  one.world = str(world_file(workdir, seed))
  if exp.get("reuse_from"):  # that world's runs in the other sweep, where it ran this world
    other = Path(exp.reuse_from) / f"world-{seed}"
    one.reuse_from = str(other) if other.is_dir() else ""
  return one


def _world_job(exp, workdir: Path, seed: int) -> tuple[float, str]:
  """One world's experiment in a worker process of its own, every byte of its output (XLA's
  included) in <workdir>/world-<seed>/log.txt; returns (seconds, "" or the error's first line)."""
  from msm_jax.experiment.report import run_experiment
  t = time.perf_counter()
  wd = workdir / f"world-{seed}"
  wd.mkdir(parents=True, exist_ok=True)
  log = open(wd / "log.txt", "a", buffering=1)  # the process ends with the world
  os.dup2(log.fileno(), 1)
  os.dup2(log.fileno(), 2)
  sys.stdout = sys.stderr = log
  try:
    run_experiment(one_world(exp, workdir, seed), wd)
    return time.perf_counter() - t, ""
  except Exception as e:  # noqa: BLE001 (reported to the parent, which names the world)
    traceback.print_exc()
    return time.perf_counter() - t, " ".join(f"{type(e).__name__}: {e}".split("\n")[0].split())


def run_parallel(exp, workdir: Path) -> None:
  """Train and evaluate `exp.world_jobs` worlds at once, each in a fresh process (spawned, so
  each has its own JAX runtime; on a GPU they share it without preallocating). Stages are cached
  as in any `msm run`, so the table is then read back in this process without training."""
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # several runtimes, one GPU
  failed = {}
  with cf.ProcessPoolExecutor(int(exp.world_jobs), multiprocessing.get_context("spawn"),
                              max_tasks_per_child=1) as pool:
    jobs = {pool.submit(_world_job, exp, workdir, s): s for s in exp.world_seeds}
    print(f"[msm run] {len(jobs)} worlds, {exp.world_jobs} at once; each world's output in "
          f"{workdir}/world-<N>/log.txt", flush=True)
    for job in cf.as_completed(jobs):
      seed = jobs[job]
      seconds, error = job.result()
      if error:  # the other worlds go on; what this one trained stays cached
        failed[seed] = error
      print(f"[msm run] world {seed} {'FAILED' if error else 'done'} in {seconds:.0f} s",
            flush=True)
  if failed:  # one line that names each failed world and where its output is
    raise UserError("worlds failed: " + "; ".join(
        f"world {s} ({m}; log {workdir / f'world-{s}' / 'log.txt'})" for s, m in failed.items()))


def load_baseline(exp) -> list[dict] | None:
  """The rows of `exp.compare_with` (a worlds.json), checked to hold every world of this sweep."""
  if not exp.get("compare_with"):
    return None
  path = Path(exp.compare_with)
  try:
    rows = json.loads(path.read_text())["rows"]
    have = {int(r["world_seed"]): r for r in rows}
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ConfigError(f"config.compare_with={str(path)!r}: not a worlds.json of `msm run` over "
                      f"worlds ({type(e).__name__}: {e})") from e
  missing = [s for s in exp.world_seeds if int(s) not in have]
  if missing:
    raise ConfigError(f"config.compare_with={str(path)!r} has no rows for world seeds {missing}: "
                      "a paired comparison needs the same worlds")
  return [have[int(s)] for s in exp.world_seeds]


def paired(rows: list[dict], base_rows: list[dict], path: str) -> dict:
  """Each world's gap after AFT minus the baseline recipe's on the same world, and the mean
  difference with a Student-t interval over worlds."""
  for r, b in zip(rows, base_rows):
    if (r["world"], list(r["compare"])) != (b["world"], list(b["compare"])):
      raise ConfigError(f"config.compare_with={path!r}: world seed {r['world_seed']} is "
                        f"{b['world']} {b['compare']} there and {r['world']} {r['compare']} "
                        "here: not the same world (was the generator changed?)")
  diffs = [r["after"] - b["after"] for r, b in zip(rows, base_rows)]
  t = t_interval(diffs)
  return {"path": path, "per_world": [
              {"world_seed": r["world_seed"], "world": r["world"], "after": r["after"],
               "baseline": b["after"], "difference": d}
              for r, b, d in zip(rows, base_rows, diffs)],
          "mean_difference": t["value"], "ci": [t["ci_low"], t["ci_high"]],
          "higher": int(sum(d > 0 for d in diffs)), "worlds": len(diffs)}


def paired_markdown(cmp: dict) -> str:
  md = ["", f"Against `{cmp['path']}` (the same worlds, another recipe):", "",
        "| world | gap after AFT | baseline | difference |", "|---|---|---|---|"]
  md += [f"| {w['world']} | {_f(w['after'])} | {_f(w['baseline'])} | {_f(w['difference'])} |"
         for w in cmp["per_world"]]
  md += ["", f"Mean difference {_f(cmp['mean_difference'])}, 95% t-interval over worlds "
         f"[{_f(cmp['ci'][0])}, {_f(cmp['ci'][1])}]; higher in {cmp['higher']} of "
         f"{cmp['worlds']} worlds."]
  return "\n".join(md)


def run_worlds(exp, workdir: Path) -> dict:
  """Run the experiment on every world of `exp.world_seeds`; write worlds.json and worlds.md."""
  from msm_jax.experiment.report import run_experiment
  if tuple(exp.spec_values):  # names of one world's values mean nothing in another
    raise ConfigError(f"config.spec_values={tuple(exp.spec_values)}: a worlds sweep compares "
                      "each generated world's own two values; leave spec_values empty")
  jobs = exp.get("world_jobs", 1)
  if not isinstance(jobs, int) or jobs < 1:
    raise ConfigError(f"config.world_jobs={jobs!r}: the number of worlds run at once, 1 or more")
  base_rows = load_baseline(exp)  # before any work: a bad path fails now, not after hours
  reuse_runs(exp)
  if jobs > 1 and len(exp.world_seeds) > 1:
    run_parallel(exp, workdir)
  rows = []
  for seed in exp.world_seeds:
    summary = run_experiment(one_world(exp, workdir, seed), workdir / f"world-{seed}")
    rows.append(world_row(seed, summary, exp.checks.margin))
  dist = distribution(rows, exp.checks)
  out = {"rows": rows, "distribution": dist, "checks": dist["checks"],
         "markdown": markdown(rows, dist, exp)}
  if base_rows is not None:  # checked after training: the stages stay cached either way
    out["compare_with"] = paired(rows, base_rows, str(exp.compare_with))
    out["markdown"] += "\n" + paired_markdown(out["compare_with"])
  atomic_write_text(workdir / "worlds.json", json.dumps(out, indent=1))
  atomic_write_text(workdir / "worlds.md", out["markdown"] + "\n")
  print(out["markdown"])
  print(f"[msm run] outputs: {workdir / 'worlds.json'}, {workdir / 'worlds.md'}")
  return out
