"""Reports: one results JSON, one Markdown table, one PNG of bars with 95% CIs per condition.

A condition is what was evaluated (a checkpoint, a spec variant, a seed). The three files are
written from the same numbers; the PNG also carries, in a PNG text chunk named `msm_eval`, the
bar heights and CI ends read back from the drawn figure, so anyone can check that the plot
shows what the JSON says. The plot uses matplotlib's object API (no pyplot): importing the
harness never changes a notebook's plotting backend.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from msm_io import paths as path_layer

PNG_KEY = "msm_eval"


def _condition_name(result, index: int) -> str:
  ckpt = result.model.get("checkpoint") or ""
  if ckpt:
    parts = Path(ckpt).parts  # .../<run>/checkpoints/<step>
    if len(parts) >= 3 and parts[-2] == "checkpoints":
      return f"{parts[-3]}@{parts[-1]}"
    return Path(ckpt).name
  return f"model{index}"


def normalize(results) -> list[tuple[str, object]]:
  """A SuiteResult, a list of them, or {condition: SuiteResult | [SuiteResult]} -> pairs."""
  if isinstance(results, dict):
    out = []
    for cond, rs in results.items():
      out += [(str(cond), r) for r in (rs if isinstance(rs, (list, tuple)) else [rs])]
    return out
  if not isinstance(results, (list, tuple)):
    results = [results]
  return [(_condition_name(r, i), r) for i, r in enumerate(results)]


def _finite(x):
  """JSON has no NaN: write null."""
  if isinstance(x, float) and not math.isfinite(x):
    return None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return x


def _fmt(x) -> str:
  return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4f}"


def _suites(pairs) -> list[tuple[str, str]]:
  """(name, kind) groups: the same file scored plainly and under framings are two tables."""
  return list(dict.fromkeys((r.name, r.kind) for _, r in pairs))


def markdown(pairs, comparisons=(), title: str = "Evaluation") -> str:
  lines = [f"# {title}", ""]
  for suite, kind in _suites(pairs):
    rows = [(c, r) for c, r in pairs if (r.name, r.kind) == (suite, kind)]
    lines += [f"## {suite} ({kind})", "",
              "| metric | condition | value | 95% CI | n |", "|---|---|---|---|---|"]
    metrics = list(dict.fromkeys(m for _, r in rows for m in r.metrics))
    for m in metrics:
      for cond, r in rows:
        if m in r.metrics:
          s = r.metrics[m]
          lines.append(f"| {m} | {cond} | {_fmt(s['value'])} | "
                       f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] | {s['n']} |")
    lines.append("")
  if comparisons:
    lines += ["## Paired comparisons (a - b over shared items)", "",
              "| suite | metric | a | b | a - b | 95% CI | p | n |",
              "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
      lines.append(f"| {c['suite']} | {c['metric']} | {c['a_name']}: {_fmt(c['a'])} | "
                   f"{c['b_name']}: {_fmt(c['b'])} | {_fmt(c['diff'])} | "
                   f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}] | {_fmt(c['p_value'])} | "
                   f"{c['n']} |")
    lines.append("")
  return "\n".join(lines)


def plot(pairs, path: Path, title: str = "Evaluation") -> list[dict]:
  """Grouped bars (one per condition) with CI whiskers for each suite's headline metrics.
  Returns what was drawn, read back from the figure's artists."""
  suites = _suites(pairs)
  fig = Figure(figsize=(max(6.0, 1.2 * max(len(_headline(pairs, s)) for s in suites) + 2),
                        3.2 * len(suites)), layout="constrained")
  axes = fig.subplots(len(suites), 1, squeeze=False)[:, 0]
  drawn = []
  missing = {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
  for ax, (suite, kind) in zip(axes, suites):
    metrics = _headline(pairs, (suite, kind))
    x = np.arange(len(metrics))
    here = [(c, r) for c, r in pairs if (r.name, r.kind) == (suite, kind)]
    width = min(0.35, 0.8 / len(here))
    for k, (cond, r) in enumerate(here):
      stats = [r.metrics.get(m, missing) for m in metrics]
      value = np.array([s["value"] for s in stats], float)
      low = np.array([s["ci_low"] for s in stats], float)
      high = np.array([s["ci_high"] for s in stats], float)
      err = np.nan_to_num(np.stack([value - low, high - value]))
      bars = ax.bar(x + (k - (len(here) - 1) / 2) * width, np.nan_to_num(value), width,
                    yerr=err, capsize=3, label=cond)
      segments = bars.errorbar.lines[2][0].get_segments()
      for m, patch, seg, v in zip(metrics, bars.patches, segments, value):
        if math.isfinite(v):
          drawn.append({"suite": suite, "kind": kind, "condition": cond, "metric": m,
                        "value": float(patch.get_height()), "ci_low": float(seg[0][1]),
                        "ci_high": float(seg[1][1])})
    ax.set_xticks(x, metrics, rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.75, len(metrics) - 0.25)
    ax.set_title(f"{suite} ({kind})", fontsize=10)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
  fig.suptitle(f"{title} (bars: mean over items, whiskers: 95% bootstrap CI)", fontsize=10)
  with path_layer.path(path).open("wb") as f:  # local or gs://
    fig.savefig(f, format="png", dpi=110, metadata={PNG_KEY: json.dumps(drawn)})
  return drawn


def _headline(pairs, suite_kind):
  return list(dict.fromkeys(m for _, r in pairs if (r.name, r.kind) == suite_kind
                            for m in r.headline if m in r.metrics))


def write_report(results, out_dir, *, comparisons=(), title: str = "Evaluation") -> dict:
  """Write results.json, results.md and results.png to `out_dir`; return their paths.

  `comparisons`: dicts from `stats.compare`, each with `suite`, `a_name` and `b_name` added.
  """
  out = path_layer.path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  pairs = normalize(results)
  data = {"title": title, "results": [{"condition": c, **r.to_dict()} for c, r in pairs],
          "comparisons": list(comparisons)}
  paths = {"json": out / "results.json", "markdown": out / "results.md",
           "png": out / "results.png"}
  paths["json"].write_text(json.dumps(_finite(data), indent=1, sort_keys=False))
  paths["markdown"].write_text(markdown(pairs, comparisons, title))
  plot(pairs, paths["png"], title)
  return paths
