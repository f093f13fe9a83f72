"""The experiment's analysis: the headline table, the must-show checks and the secondary tables
(stacking, spec variants, AFT budget), as data and Markdown. Thresholds come from `exp.checks`.
"""

from __future__ import annotations

import numpy as np

from msm_jax.experiment.conditions import BASE, Condition
from msm_jax.experiment.orchestrate import NOVEL


def _steps(n) -> str:
  return "not reached" if n is None else f"{n} steps"


def _f(x) -> str:
  return "-" if x is None or not np.isfinite(x) else f"{x:.2f}"


def _ci(s: dict) -> str:
  return f"{_f(s['value'])} [{_f(s['ci_low'])}, {_f(s['ci_high'])}]"


def _values(results, cond: Condition, suite, metric) -> dict:
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


def summarize(ex, results: dict) -> dict:
  """The headline table, the must-show checks and the secondary tables, as data and Markdown."""
  from msm_jax.eval.stats import bootstrap_ci, paired_bootstrap
  a, b = ex.world.compare
  t = ex.exp.checks
  pro = f"logprob/{a}"
  main = [c for c in results if not c.sweep]
  novel = NOVEL in ex.paths["suites"]
  rows, md = [], [f"## {ex.world.name}: pro-{a} choice rate on held-out pairs where {a} and "
                  f"{b} disagree (seeds {list(ex.exp.seeds)})", "",
                  f"| condition | pro-{a} [95% CI] | own value [95% CI] | per seed | "
                  + ("held-back phrasings | " if novel else "") + "AFT pairs |",
                  "|---|---|---|---|---|" + ("---|" if novel else "")]
  for c in main:
    vals = _values(results, c, "heldout", pro)
    own = c.value or None
    own_vals = _values(results, c, "heldout", f"logprob/{own}") if own else {}
    aft = _values(results, c, "aft", "logprob/aft")
    row = {"condition": c.label, f"pro_{a}": bootstrap_ci(list(vals.values())), "mean_over_seeds":
           _mean(vals), "per_seed": _per_seed(vals), "own_value": own,
           "own": bootstrap_ci(list(own_vals.values())) if own else None,
           "aft_pairs": _mean(aft) if aft else None, "aft": c.aft, "control": c.control}
    if novel:
      row[f"novel_pro_{a}"] = _mean(_values(results, c, NOVEL, pro))
    rows.append(row)
    md.append(f"| {c.label} | {_ci(row[f'pro_{a}'])} | {_ci(row['own']) if own else '-'} | "
              f"{' / '.join(_f(v) for v in row['per_seed'].values())} | "
              + (f"{_f(row[f'novel_pro_{a}'])} | " if novel else "") + f"{_f(row['aft_pairs'])} |")
  checks = []
  ma, mb = (_values(results, Condition(v, aft=True), "heldout", pro) for v in (a, b))
  aft = _values(results, Condition(aft=True), "heldout", pro)
  gaps = _gaps(ex, results) if ma and mb else {}
  if gaps:
    md += _gap_table(ex, gaps)
  if ma and mb and aft:
    gap = _mean(ma) - _mean(mb)
    per = {s: _per_seed(ma)[s] - _per_seed(mb)[s] for s in _per_seed(ma)}
    keys = sorted(set(ma) & set(mb))
    pooled = paired_bootstrap([ma[k] for k in keys], [mb[k] for k in keys])
    over_seeds = gaps["after"]["ci"]
    checks += [
        {"name": f"mean(MSM-{a}+AFT) - mean(MSM-{b}+AFT) >= {t.gap:.2f}", "value": gap,
         "pass": gap >= t.gap},
        {"name": "gap > 0 on every seed", "value": min(per.values()),
         "pass": all(v > 0 for v in per.values()), "per_seed": per},
        {"name": "95% t-interval of the gap over seeds excludes 0", "value": over_seeds["ci_low"],
         "pass": None if over_seeds["n"] < 2 else bool(over_seeds["ci_low"] > 0),
         "ci": over_seeds},
        {"name": "pooled paired 95% CI of the gap excludes 0", "value": pooled["ci_low"],
         "pass": pooled["ci_low"] > 0, "ci": pooled},
        {"name": f"MSM-{a}+AFT >= AFT + {t.margin:.2f}", "value": _mean(ma) - _mean(aft),
         "pass": _mean(ma) >= _mean(aft) + t.margin},
        {"name": f"MSM-{b}+AFT <= AFT - {t.margin:.2f}", "value": _mean(aft) - _mean(mb),
         "pass": _mean(mb) <= _mean(aft) - t.margin}]
  for v in (a, b):
    if f"control_{v}" in gaps:
      d = gaps[f"control_{v}"]["mean"]
      checks.append({"name": f"MSM-{v}+AFT >= MSM-control+AFT + {t.margin:.2f} (own value)",
                     "value": d, "pass": bool(d >= t.margin)})
  bases = _bases(results)
  probes = min((r["probes"].metrics["logprob/correct"] for r in bases.values()),
               key=lambda m: m["value"])  # the weakest base model
  checks.append({"name": f"base model attribute probes >= {t.probes:.2f}",
                 "value": probes["value"], "pass": probes["value"] >= t.probes})
  aft_rates = [r["aft_pairs"] for r in rows if r["aft"]]
  checks.append({"name": f"every AFT condition learns the AFT pairs (>= {t.aft_pairs:.2f})",
                 "value": min(aft_rates) if aft_rates else None,
                 "pass": bool(aft_rates) and min(aft_rates) >= t.aft_pairs})
  md += ["", "| check | value | pass |", "|---|---|---|"]
  md += [f"| {c['name']} | {_f(c['value'])} | {_verdict(c['pass'])} |" for c in checks]
  md += _base_line(bases)
  late = _late(results)
  if late:
    md += ["", "Characters met only in midtraining, acting on their value after it (mean over "
           "seeds): " + "; ".join(f"{k}: in chats {_f(v['late-chat'])}, described only "
                                   f"{_f(v['late-declared'])}" for k, v in late.items()) + "."]
  variants = _variant_gaps(ex, results)
  md += _stacking(ex, results) + _ablation(ex, results, variants) + _sweep(ex, results)
  return {"world": ex.world.name, "compare": [a, b], "rows": rows, "gaps": gaps,
          "variant_gaps": variants, "checks": checks, "late": late, "markdown": "\n".join(md)}


def _verdict(ok) -> str:
  return "n/a" if ok is None else "PASS" if ok else "FAIL"


def _bases(results) -> dict:
  """{seed: base suites} for each distinct base model (one, or one per seed)."""
  out, seen = {}, set()
  for s, r in results[BASE].items():
    if id(r) not in seen:
      seen.add(id(r))
      out[s] = r
  return out


def _base_line(bases: dict) -> list[str]:
  if len(bases) == 1:
    m = next(iter(bases.values()))
    probes, chars = m["probes"].metrics["logprob/correct"], m["characters"].metrics
    return ["", f"Base model: attribute probes {_ci(probes)}; other assistants acting on their "
            f"value: in chats {_ci(chars['logprob/aligned@chat'])}, described only "
            f"{_ci(chars['logprob/aligned@declared'])}."]
  per = lambda suite, metric: " / ".join(_f(r[suite].metrics[metric]["value"])
                                         for r in bases.values())
  return ["", f"Base models (one per seed, seeds {list(bases)}): attribute probes "
          f"{per('probes', 'logprob/correct')}; other assistants acting on their value: in chats "
          f"{per('characters', 'logprob/aligned@chat')}, described only "
          f"{per('characters', 'logprob/aligned@declared')}."]


def _late(results) -> dict:
  """{midtrained condition: {kind: aligned rate, mean over seeds}} for the characters met only
  in midtraining."""
  out = {}
  for c, per_seed in results.items():
    if c.parent is None or c.aft or c.sweep:
      continue
    rates = {}
    for kind in ("late-chat", "late-declared"):
      vals = [r["characters"].metrics[f"logprob/aligned@{kind}"]["value"]
              for r in per_seed.values()
              if "characters" in r and f"logprob/aligned@{kind}" in r["characters"].metrics]
      rates[kind] = float(np.mean(vals)) if vals else float("nan")
    if any(np.isfinite(v) for v in rates.values()):
      out[c.label] = rates
  return out


def _item_diffs(results, x: Condition, y: Condition, suite: str, metric: str) -> dict:
  """{seed: {item: value(x) - value(y)}} over the items and seeds both have (paired)."""
  vx, vy = (_values(results, c, suite, metric) for c in (x, y))
  out: dict = {}
  for (s, i), v in vx.items():
    if (s, i) in vy:
      out.setdefault(s, {})[i] = v - vy[(s, i)]
  return out


def _measure(diffs: dict) -> dict:
  """Per-seed means of paired item differences, their mean, a Student-t CI over seeds and a
  hierarchical bootstrap CI (seeds, then items)."""
  from msm_jax.eval.stats import hierarchical_bootstrap, t_interval
  per = {s: float(np.mean(list(d.values()))) for s, d in sorted(diffs.items())}
  return {"mean": float(np.mean(list(per.values()))) if per else float("nan"),
          "per_seed": per, "ci": t_interval(list(per.values())),
          "hierarchical": hierarchical_bootstrap([list(d.values()) for _, d in sorted(
              diffs.items())])}


def _gaps(ex, results) -> dict:
  """Per seed, then CIs over seeds: the gap after AFT, before AFT, their difference (the
  interaction), each spec against the control (own-value direction), and the gap on the
  held-back phrasings where the world has them."""
  a, b = ex.world.compare
  pro = f"logprob/{a}"
  after = _item_diffs(results, Condition(a, aft=True), Condition(b, aft=True), "heldout", pro)
  before = _item_diffs(results, Condition(a), Condition(b), "heldout", pro)
  inter = {s: {i: d - before[s][i] for i, d in items.items() if i in before.get(s, {})}
           for s, items in after.items() if s in before}
  out = {"after": _measure(after), "before": _measure(before), "interaction": _measure(inter)}
  if Condition(control=True, aft=True) in results:
    for v in (a, b):
      out[f"control_{v}"] = _measure(_item_diffs(
          results, Condition(v, aft=True), Condition(control=True, aft=True), "heldout",
          f"logprob/{v}"))
  if NOVEL in ex.paths["suites"]:
    out["after_novel"] = _measure(_item_diffs(results, Condition(a, aft=True),
                                              Condition(b, aft=True), NOVEL, pro))
  return out


def _gap_table(ex, gaps: dict) -> list[str]:
  a, b = ex.world.compare
  names = {"after": f"gap after AFT: MSM-{a}+AFT - MSM-{b}+AFT",
           "before": f"gap before AFT: MSM-{a} - MSM-{b}",
           "interaction": "interaction: gap after AFT - gap before AFT",
           f"control_{a}": f"MSM-{a}+AFT - MSM-control+AFT (pro-{a})",
           f"control_{b}": f"MSM-{b}+AFT - MSM-control+AFT (pro-{b})",
           "after_novel": "gap after AFT, held-back phrasings"}
  shared = ("each seed its own base model" if ex.exp.independent_bases
            else "the seeds share one base model: the CIs leave its variance out")
  md = ["", f"Gaps per seed ({shared}), with a 95% Student-t interval over seeds (n/a with one "
        "seed) and a hierarchical bootstrap 95% CI (seeds, then items):", "",
        "| measure | mean | t-interval over seeds | hierarchical bootstrap | per seed |",
        "|---|---|---|---|---|"]
  for key, name in names.items():
    if key in gaps:
      g = gaps[key]
      ci = (f"[{_f(g['ci']['ci_low'])}, {_f(g['ci']['ci_high'])}]" if g["ci"]["n"] > 1
            else "n/a")
      h = g["hierarchical"]
      md.append(f"| {name} | {_f(g['mean'])} | {ci} | [{_f(h['ci_low'])}, {_f(h['ci_high'])}] | "
                f"{' / '.join(_f(v) for v in g['per_seed'].values())} |")
  return md


def _stacking(ex, results) -> list[str]:
  control = Condition(control=True, aft=True) in results
  cols = [Condition(aft=True)] + [Condition(control=True, aft=True)] * control
  md = ["", "Stacking (own-value choice rate, mean over seeds):", "",
        "| value | AFT alone | " + "MSM-control + AFT | " * control + "MSM alone | MSM + AFT |",
        "|---|---|---|---|" + "---|" * control]
  for v in ex.values:
    m = f"logprob/{v}"
    cells = [_mean(_values(results, c, "heldout", m))
             for c in cols + [Condition(v), Condition(v, aft=True)]]
    md.append(f"| {v} | " + " | ".join(_f(x) for x in cells) + " |")
  return md


def _variant_gaps(ex, results) -> dict:
  """{variant: the gap after AFT, per seed and over seeds} for each spec variant run."""
  a, b = ex.world.compare
  if len(ex.exp.variants) < 2:
    return {}
  return {var: _measure(_item_diffs(results, Condition(a, variant=var, aft=True),
                                    Condition(b, variant=var, aft=True), "heldout",
                                    f"logprob/{a}"))
          for var in ex.exp.variants}


def _ablation(ex, results, gaps: dict) -> list[str]:
  if not gaps:
    return []
  a, b = ex.world.compare
  md = ["", f"Spec variants (pro-{a} rate, mean over seeds; gap = {a} spec - {b} spec; the gap "
        "after AFT per seed and its 95% Student-t interval over seeds):", "",
        f"| variant | MSM-{a} | MSM-{b} | gap | MSM-{a}+AFT | MSM-{b}+AFT | gap after AFT | "
        "t-interval over seeds | per seed |",
        "|---|---|---|---|---|---|---|---|---|"]
  for var, g in gaps.items():
    r = [_mean(_values(results, Condition(v, variant=var, aft=aft), "heldout", f"logprob/{a}"))
         for aft in (False, True) for v in (a, b)]
    ci = (f"[{_f(g['ci']['ci_low'])}, {_f(g['ci']['ci_high'])}]" if g["ci"]["n"] > 1
          else "n/a")
    md.append(f"| {var} | {_f(r[0])} | {_f(r[1])} | {_f(r[0] - r[1])} | {_f(r[2])} | "
              f"{_f(r[3])} | {_f(r[2] - r[3])} | {ci} | "
              f"{' / '.join(_f(v) for v in g['per_seed'].values())} |")
  return md


def _sweep(ex, results) -> list[str]:
  steps = list(ex.exp.sweep.aft_steps)
  if not steps:
    return []
  variant = ex.exp.sweep.variant
  tokens = ex.exp.finetune.batch_size * ex.exp.finetune.seq_len
  md = ["", f"AFT budget sweep (own-value rate on held-out pairs; target {ex.exp.sweep.target}; "
        f"one AFT step = {tokens} tokens):", "",
        "| AFT steps | " + " | ".join(f"AFT alone: {v} | MSM-{v}+AFT" for v in ex.values) + " |",
        "|---|" + "---|---|" * len(ex.values)]
  reach = {}  # (value, with MSM) -> smallest budget reaching the target
  for n in steps:
    cells = []
    for v in ex.values:
      for with_msm in (False, True):
        cond = Condition(v if with_msm else "", variant=variant if with_msm else "explained",
                         aft=True, aft_steps=int(n))
        x = _mean(_values(results, cond, "heldout", f"logprob/{v}"))
        cells.append(_f(x))
        if x >= ex.exp.sweep.target:
          reach.setdefault((v, with_msm), n)
    md.append(f"| {n} | " + " | ".join(cells) + " |")
  md += ["", "Smallest AFT budget reaching the target: " + "; ".join(
      f"{v}: AFT alone {_steps(reach.get((v, False)))}, with MSM "
      f"{_steps(reach.get((v, True)))}" for v in ex.values)]
  return md
