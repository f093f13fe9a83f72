"""Evaluation suites: JSONL files of items, one scorer per kind, per-item records and metrics.

Every line is one JSON object. The kind comes from an optional `"kind"` field, else from the
fields present (`framings` -> consistency, `options` -> preference, `choices` ->
multiple_choice, `reference` -> open). A file holds one kind. Common fields: `id` (str, unique),
`domain` (str, optional: metrics are also broken down per domain), `format` ("chat" | "text",
default "chat").

  chat  the prompt is one user message rendered with the checkpoint's chat template
        (cfg.data.chat_template); `answer_prefix` opens the assistant's reply, and what is scored
        or generated continues it.
  text  the raw text `prompt + answer_prefix` (BOS first when the run trained with it).

preference   {"id", "domain", "prompt": "... {a} ... {b} ...", "answer_prefix": "I prefer ",
              "options": [{"text": str, "labels": {value: bool, ...}}, {...}], "format"}
  Both presentation orders are asked ({a}, {b} filled with option 0, 1 and then 1, 0); each
  option's log-prob as the continuation is averaged over the orders and the higher one is the
  choice. Metrics, per value name v in the labels:
    logprob/v             share of items whose chosen option has labels[v] true
    generation/v          the same by greedy generation (both orders; the answer is the option
                          whose text appears first in the reply, case-insensitive; per item the
                          mean over the orders that parsed)
    generation/parse_rate share of generations that named an option
    logprob/first_position_rate  share of single-order choices of the option listed first
                          (0.5 = no position bias), logprob/order_agreement  share of items
                          whose two orders agree
multiple_choice {"id", "domain", "question": str, "choices": [str, ...], "answer": int,
                 "answer_prefix": "" , "format"}
  Each choice scored as the continuation of question + answer_prefix. Metrics: accuracy (by
  log-prob sum), accuracy_norm (by per-token mean).
open         {"id", "domain", "prompt": str, "reference": str, "rubric": str (optional),
              "distractors": [str, ...] (optional), "answer_prefix": "", "format"}
  The model's answer is generated (greedy) and graded by `grader` (see `graders.py`); the
  default offline grader reports reference_logprob (per-token log-prob of the reference answer)
  and, with distractors, reference_preferred (the reference beats every distractor).
consistency  a preference item plus {"framings": {"observed": str, "unobserved": str, ...}}
  Each framing (a system message in chat format, a line before the prompt in text format) is run
  as a preference item. Metrics: <framing>/<metric> for each framing and gap/<metric> =
  observed - unobserved per item (the compliance gap when a label marks the behaviour).
  `run_suite(..., framings={...})` turns every preference item of a suite into this kind.

Every metric is the mean of per-item values, with a 95% bootstrap CI over items; the records
keep those values (`record["values"]`) so two checkpoints can be compared item by item.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from msm_io.files import iter_jsonl
from msm_jax.eval import graders as graders_lib
from msm_jax.eval.evaluator import Chat
from msm_jax.eval.stats import bootstrap_ci

KINDS = ("preference", "multiple_choice", "open", "consistency")
_REQUIRED = {
    "preference": {"id": str, "prompt": str, "options": list},
    "consistency": {"id": str, "prompt": str, "options": list, "framings": dict},
    "multiple_choice": {"id": str, "question": str, "choices": list, "answer": int},
    "open": {"id": str, "prompt": str, "reference": str},
}


_DIAGNOSTICS = ("first_position_rate", "order_agreement", "parse_rate")  # kept out of plots


class SuiteError(ValueError):
  """A suite file that cannot be scored; the message names file:line and the field."""


@dataclasses.dataclass
class SuiteResult:
  name: str
  kind: str
  records: list  # per item: {"id", "domain", "values": {metric: value | None}, ...details}
  metrics: dict  # metric -> {"value", "ci_low", "ci_high", "n"}
  headline: list  # the metrics worth a plot
  model: dict = dataclasses.field(default_factory=dict)
  options: dict = dataclasses.field(default_factory=dict)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _infer_kind(item: dict) -> str | None:
  if "kind" in item:
    return item["kind"]
  for field, kind in (("framings", "consistency"), ("options", "preference"),
                      ("choices", "multiple_choice"), ("reference", "open")):
    if field in item:
      return kind
  return None


def _check(item: dict, kind: str, where: str) -> None:
  if kind not in KINDS:
    raise SuiteError(f"{where}: kind {kind!r} is not one of {KINDS}")
  for field, typ in _REQUIRED[kind].items():
    if not isinstance(item.get(field), typ):
      raise SuiteError(f"{where}: field {field!r} must be a {typ.__name__}")
  if item.get("format", "chat") not in ("chat", "text"):
    raise SuiteError(f"{where}: field 'format' must be chat or text, got {item['format']!r}")
  if kind in ("preference", "consistency"):
    opts = item["options"]
    if len(opts) != 2 or not all(isinstance(o, dict) and isinstance(o.get("text"), str)
                                 and isinstance(o.get("labels", {}), dict) for o in opts):
      raise SuiteError(f"{where}: field 'options' must be two {{'text', 'labels'}} objects")
    if "{a}" not in item["prompt"] or "{b}" not in item["prompt"]:
      raise SuiteError(f"{where}: field 'prompt' needs both {{a}} and {{b}} placeholders")
  if kind == "consistency" and not {"observed", "unobserved"} <= set(item["framings"]):
    raise SuiteError(f"{where}: field 'framings' needs 'observed' and 'unobserved' texts")
  if kind == "multiple_choice" and not 0 <= item["answer"] < len(item["choices"]):
    raise SuiteError(f"{where}: field 'answer' must index 'choices'")


def load_suite(path) -> tuple[str, list[dict]]:
  """Read and check a suite file -> (kind, items)."""
  path = Path(path)
  if not path.is_file():
    raise SuiteError(f"suite file not found: {path}")
  items, kinds, ids = [], set(), set()
  for lineno, item in iter_jsonl(path, SuiteError):
    where = f"{path}:{lineno}"
    kind = _infer_kind(item)
    if kind is None:
      raise SuiteError(f"{where}: cannot tell the item's kind; add a 'kind' field")
    _check(item, kind, where)
    if item["id"] in ids:
      raise SuiteError(f"{where}: duplicate id {item['id']!r}")
    ids.add(item["id"])
    kinds.add(kind)
    items.append(item)
  if len(kinds) > 1:
    raise SuiteError(f"{path}: mixes item kinds {sorted(kinds)}; use one file per kind")
  if not items:
    raise SuiteError(f"{path}: no items")
  return kinds.pop(), items


def _context(item: dict, prompt: str, prefix: str, framing: str | None = None):
  if item.get("format", "chat") == "text":
    return (f"{framing}\n" if framing else "") + prompt + prefix
  messages = ([{"role": "system", "content": framing}] if framing else [])
  return Chat(tuple(messages + [{"role": "user", "content": prompt}]), prefix)


def parse_choice(answer: str, options: list[str]) -> int | None:
  """The option whose text appears first in the answer (the longest one on a tie), else None."""
  low = answer.lower()
  found = [(low.find(o.lower()), -len(o), i) for i, o in enumerate(options) if o.lower() in low]
  return min(found)[2] if found else None


def _preference(ev, items, *, framing_key=None, generate=True, max_new_tokens=16,
                length_normalize=False, progress=False):
  """Per-item records of preference items (optionally under one framing of each item)."""
  contexts, prompts = [], []
  for it in items:
    framing = it["framings"][framing_key] if framing_key else None
    a, b = (o["text"] for o in it["options"])
    orders = [it["prompt"].replace("{a}", x).replace("{b}", y) for x, y in ((a, b), (b, a))]
    prefix = it.get("answer_prefix", "")
    contexts.append([_context(it, p, prefix, framing) for p in orders])
    prompts.extend(contexts[-1])
  texts = [[o["text"] for o in it["options"]] for it in items]
  choices = ev.forced_choice(contexts, texts, length_normalize=length_normalize,
                             progress=progress)
  gens = []
  if generate:
    stops = [("\n",) if it.get("format", "chat") == "text" else () for it in items]
    text_stop = any(stops)
    out = ev.generate(prompts, max_new_tokens, stop=("\n",) if text_stop else (),
                      progress=progress)
    gens = [out[2 * i:2 * i + 2] for i in range(len(items))]
  records = []
  for i, (it, ch) in enumerate(zip(items, choices)):
    labels = [o.get("labels", {}) for o in it["options"]]
    values = {f"logprob/{v}": float(bool(labels[ch.choice].get(v))) for v in labels[0]}
    # order 0 lists option 0 first, order 1 lists option 1 first
    values["logprob/first_position_rate"] = (
        (ch.order_choices[0] == 0) + (ch.order_choices[1] == 1)) / 2
    values["logprob/order_agreement"] = float(ch.order_choices[0] == ch.order_choices[1])
    rec = {"id": it["id"], "domain": it.get("domain", ""), "choice": ch.choice,
           "chosen": texts[i][ch.choice], "margin": ch.margin, "prob": ch.prob,
           "option_scores": ch.option_scores, "order_scores": ch.order_scores,
           "order_choices": ch.order_choices}
    if generate:
      parsed = [parse_choice(g.text, texts[i]) for g in gens[i]]
      ok = [p for p in parsed if p is not None]
      values["generation/parse_rate"] = len(ok) / len(parsed)
      for v in labels[0]:
        values[f"generation/{v}"] = (sum(bool(labels[p].get(v)) for p in ok) / len(ok)
                                     if ok else None)
      rec["generations"] = [g.text for g in gens[i]]
      rec["parsed"] = parsed
    rec["values"] = values
    records.append(rec)
  return records


def _consistency(ev, items, **kw):
  keys = list(dict.fromkeys(k for it in items for k in it["framings"]))
  by_framing = {k: _preference(ev, [it for it in items if k in it["framings"]], framing_key=k,
                               **kw) for k in keys}
  records = []
  for it in items:
    rec = {"id": it["id"], "domain": it.get("domain", ""), "values": {}, "framings": {}}
    for k in keys:
      r = next((r for r in by_framing[k] if r["id"] == it["id"]), None)
      if r is None:
        continue
      rec["framings"][k] = {f: v for f, v in r.items() if f not in ("id", "domain")}
      rec["values"].update({f"{k}/{m}": v for m, v in r["values"].items()})
    for m in [m.split("/", 1)[1] for m in rec["values"]
              if m.startswith("observed/") and not m.endswith(_DIAGNOSTICS)]:
      o, u = rec["values"].get(f"observed/{m}"), rec["values"].get(f"unobserved/{m}")
      rec["values"][f"gap/{m}"] = None if o is None or u is None else o - u
    records.append(rec)
  return records


def _multiple_choice(ev, items, *, progress=False, **_):
  contexts = [_context(it, it["question"], it.get("answer_prefix", "")) for it in items]
  sums = ev.forced_choice(contexts, [it["choices"] for it in items], progress=progress)
  means = ev.forced_choice(contexts, [it["choices"] for it in items], length_normalize=True)
  return [{"id": it["id"], "domain": it.get("domain", ""), "choice": s.choice,
           "choice_norm": m.choice, "answer": it["answer"], "option_scores": s.option_scores,
           "values": {"accuracy": float(s.choice == it["answer"]),
                      "accuracy_norm": float(m.choice == it["answer"])}}
          for it, s, m in zip(items, sums, means)]


def _open(ev, items, *, generate=True, max_new_tokens=64, grader=None, progress=False, **_):
  prompts = [_context(it, it["prompt"], it.get("answer_prefix", "")) for it in items]
  answers = ([g.text for g in ev.generate(prompts, max_new_tokens, progress=progress)]
             if generate else [None] * len(items))
  grader = grader or graders_lib.ReferenceLogprobGrader()
  grades = grader.grade(ev, items, prompts, answers)
  return [{"id": it["id"], "domain": it.get("domain", ""), "answer": a, "grade": g.get("detail"),
           "values": {k: v for k, v in g.items() if k != "detail"}}
          for it, a, g in zip(items, answers, grades)]


def _metrics(records, seed):
  names = sorted({m for r in records for m in r["values"]})
  out = {m: bootstrap_ci([r["values"].get(m) for r in records], seed=seed) for m in names}
  domains = sorted({r["domain"] for r in records if r["domain"]})
  if len(domains) > 1:
    for d in domains:
      sub = [r for r in records if r["domain"] == d]
      for m in names:
        out[f"{m}@{d}"] = bootstrap_ci([r["values"].get(m) for r in sub], seed=seed)
  return out


def run_suite(evaluator, suite_path, *, generate: bool = True, max_new_tokens: int | None = None,
              length_normalize: bool = False, grader=None, framings: dict | None = None,
              seed: int = 0, progress: bool = False, name: str | None = None) -> SuiteResult:
  """Score one suite file with `evaluator` (see the module docstring for kinds and metrics)."""
  kind, items = load_suite(suite_path)
  if framings:
    if kind != "preference":
      raise SuiteError(f"{suite_path}: framings= applies to preference suites, not {kind}")
    items, kind = [dict(it, framings=dict(framings)) for it in items], "consistency"
  opts = {"generate": generate, "progress": progress}
  if kind in ("preference", "consistency"):
    opts.update(max_new_tokens=max_new_tokens or 16, length_normalize=length_normalize)
    records = (_preference if kind == "preference" else _consistency)(evaluator, items, **opts)
  elif kind == "multiple_choice":
    records = _multiple_choice(evaluator, items, **opts)
  else:
    records = _open(evaluator, items, max_new_tokens=max_new_tokens or 64, grader=grader, **opts)
  headline = [m for m in sorted({m for r in records for m in r["values"]},
                                key=lambda m: (m.startswith("gap/"), m))
              if not m.endswith(_DIAGNOSTICS)]
  options = {k: v for k, v in opts.items() if k != "progress"}
  options.update(seed=seed, framings=framings or None,
                 grader=getattr(grader, "name", None) if kind == "open" else None)
  return SuiteResult(name=name or Path(suite_path).stem, kind=kind, records=records,
                     metrics=_metrics(records, seed), headline=headline,
                     model=evaluator.describe(), options=options)
