"""`msm eval`: score a run (and optionally a baseline run) on suites and write a report."""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm


def _name(path: str, taken: set) -> str:
  name = Path(path).absolute().name or "run"
  while name in taken:
    name += "'"
  taken.add(name)
  return name


def run_eval_command(args) -> int:
  import jax

  from msm_jax.eval import Evaluator, compare, run_suite, write_report

  runs = [args.workdir] + ([args.baseline] if args.baseline else [])
  names, results = set(), {}
  for run in runs:
    ev = Evaluator.from_checkpoint(run, step=args.step if run == args.workdir else None,
                                   batch_size=args.batch_size)
    cond = _name(run, names)
    results[cond] = []
    for suite in tqdm(args.suite, desc=f"{cond}: suites", unit="suite"):
      results[cond].append(run_suite(
          ev, suite, generate=not args.no_generate, max_new_tokens=args.max_new_tokens,
          length_normalize=args.length_normalize, seed=args.seed, progress=True))
  comparisons = []
  if args.baseline:
    (a_name, a_results), (b_name, b_results) = results.items()
    for ra, rb in zip(a_results, b_results):
      for metric in ra.headline:
        try:
          c = compare(ra, rb, metric, seed=args.seed)
        except ValueError:
          continue  # no items with a value under both
        comparisons.append({"suite": ra.name, "a_name": a_name, "b_name": b_name, **c})
  if jax.process_index() != 0:
    return 0  # every host scored its share; one writes
  paths = write_report(results, args.out, comparisons=comparisons, title=args.title)
  for cond, rs in results.items():
    for r in rs:
      shown = ", ".join(f"{m}={r.metrics[m]['value']:.3f}" for m in r.headline[:4])
      print(f"{cond} {r.name} ({r.kind}, {len(r.records)} items): {shown}")
  print("report: " + ", ".join(str(p) for p in paths.values()))
  return 0


def add_eval_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "eval", help="score checkpoints on evaluation suites",
      description="Score a run's latest checkpoint (or --step) on one or more suite files "
      "(JSONL; see msm_jax/eval/suites.py for the formats) and write results.json, results.md "
      "and results.png to --out. With --baseline, both runs are scored and compared item by "
      "item (paired bootstrap).")
  p.add_argument("--workdir", required=True, help="run dir, checkpoints dir or step dir")
  p.add_argument("--suite", action="append", required=True, help="suite JSONL (repeatable)")
  p.add_argument("--out", required=True, help="report directory")
  p.add_argument("--baseline", default="", help="a second run to compare against")
  p.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  p.add_argument("--no-generate", action="store_true",
                 help="log-prob scoring only (skip generation-based metrics)")
  p.add_argument("--max-new-tokens", type=int, default=None,
                 help="generation budget (default 16 for preference items, 64 for open)")
  p.add_argument("--length-normalize", action="store_true",
                 help="forced choice by per-token mean log-prob instead of the sum")
  p.add_argument("--batch-size", type=int, default=8, help="generation batch rows")
  p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
  p.add_argument("--title", default="Evaluation")
  p.set_defaults(func=run_eval_command)
