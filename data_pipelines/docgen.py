"""The document generator: a persisted stage tree, expanded breadth-first by a backend.

Layout of an output directory (`out/`):

    meta.json                   spec hash and name, backend identity, seed (checked on resume)
    spec.yaml                   the spec as loaded (placeholders filled)
    tree/meta.json              root node: {"stage": "domains", "items": [...]}
    tree/d00/meta.json          a domain: {"item": {...}, "stage": "subdomains", "items": [...]}
    tree/d00/s01/a02/t03/meta.json        a document type and its ideas
    tree/d00/s01/a02/t03/i004_0.json      document 0 for idea 4: {"text": ...}
    failures.json               items that failed this run (retried next run), with attempt counts
    dataset.jsonl, summary.json, token_lengths.png   the export (see `export.py`)

Which documents a run wants is fixed by the `Plan` (fan-out per stage) and `num_docs`: slots
(d, s, a, t, i, variant) are taken in an order that interleaves domains first, so any prefix is
balanced. Only ancestors of wanted slots are expanded, a node already holding enough items is
not asked again, and a document file that exists is reused: a rerun resumes, a larger
`num_docs` tops up, and a failed node or document is recorded and retried on the next run.
"""

from __future__ import annotations

import itertools
import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from data_pipelines.backend import STAGES, Backend, Context, check_items
from data_pipelines.export import export_documents
from data_pipelines.llm_client import Unreachable
from data_pipelines.spec import Spec
from msm_io.files import atomic_write_json, atomic_write_text, read_json

FORMAT_VERSION = 1


@dataclass
class Plan:
  """Children per node at each stage, and documents per idea."""
  domains: int = 5
  subdomains: int = 4
  assertions: int = 3
  doc_types: int = 4
  ideas: int = 3
  docs_per_idea: int = 1

  def capacity(self) -> int:
    return math.prod(getattr(self, s) for s in STAGES) * self.docs_per_idea

  @classmethod
  def for_count(cls, num_docs: int, docs_per_idea: int = 1) -> "Plan":
    """The smallest balanced fan-out (grown one stage at a time, domains first) that holds
    `num_docs` documents."""
    f = dict.fromkeys(STAGES, 1)
    for stage in itertools.cycle(STAGES):
      if math.prod(f.values()) * docs_per_idea >= num_docs:
        return cls(**f, docs_per_idea=docs_per_idea)
      f[stage] += 1
    raise AssertionError("unreachable")

  @classmethod
  def stratified(cls, num_docs: int, sections: int, domains: int = 5,
                 docs_per_idea: int = 1) -> "Plan":
    """`domains` x `sections` subdomains, for a backend that spreads the spec's sections over
    them evenly (`TemplateBackend(stratify_domains=domains)`), with the stages below grown one
    at a time until the plan holds `num_docs`. The domain count does not grow with `num_docs`,
    so a top-up keeps the tree a fresh run of the larger count would build."""
    f = {"domains": domains, "subdomains": max(1, sections), "assertions": 1, "doc_types": 1,
         "ideas": 1}
    for stage in itertools.cycle(STAGES[2:]):
      if math.prod(f.values()) * docs_per_idea >= num_docs:
        return cls(**f, docs_per_idea=docs_per_idea)
      f[stage] += 1
    raise AssertionError("unreachable")

  @classmethod
  def parse(cls, text: str, docs_per_idea: int = 1) -> "Plan":
    """`"5,4,3,4,3"`: domains, subdomains, assertions, doc types, ideas."""
    parts = [int(x) for x in text.split(",")]
    if len(parts) != len(STAGES) or min(parts) < 1:
      raise ValueError(f"fan-out needs {len(STAGES)} positive integers ({', '.join(STAGES)})")
    return cls(*parts, docs_per_idea=docs_per_idea)


@dataclass
class RunStats:
  """What this run did (not written to summary.json, which must not depend on history)."""
  wanted: int = 0
  generated: int = 0
  reused: int = 0
  missing: int = 0
  expansions: int = 0
  failures: list = field(default_factory=list)


class GenerationError(RuntimeError):
  pass


def select_slots(plan: Plan, num_docs: int) -> list[tuple]:
  """The first `num_docs` slots (d, s, a, t, i, variant), domains varying fastest."""
  ranges = [range(plan.docs_per_idea)] + [range(getattr(plan, s)) for s in reversed(STAGES)]
  it = itertools.product(*ranges)
  return [tuple(reversed(k[1:])) + (k[0],) for k in itertools.islice(it, num_docs)]


class DocumentGenerator:

  def __init__(self, spec: Spec, out_dir: str | Path, backend: Backend, plan: Plan,
               num_docs: int | None = None, seed: int = 0, progress: bool = True,
               on_document: Callable[[int], None] | None = None, histogram: bool = True):
    self.spec, self.out, self.backend, self.plan, self.seed = spec, Path(out_dir), backend, plan, seed
    self.num_docs = plan.capacity() if num_docs is None else min(num_docs, plan.capacity())
    self.progress, self.on_document, self.histogram = progress, on_document, histogram
    self.spec_hash = spec.content_hash()
    self.stats = RunStats()
    self._lock = threading.Lock()  # stats are updated from worker threads (llm backend)

  # --- public ----------------------------------------------------------------------------
  def preview(self) -> dict:
    slots = select_slots(self.plan, self.num_docs)
    existing = sum(self._doc_path(s).exists() for s in slots)
    return {"plan": asdict(self.plan), "capacity": self.plan.capacity(),
            "projected_documents": len(slots), "already_generated": existing,
            "to_generate": len(slots) - existing}

  def run(self) -> tuple[dict, RunStats]:
    self._check_meta()
    slots = select_slots(self.plan, self.num_docs)
    self.stats.wanted = len(slots)
    leaves = self._expand_tree(slots)
    records = self._write_documents(slots, leaves)
    self._write_failures()
    if not records:  # an empty dataset.jsonl would pass for a finished corpus
      raise GenerationError(
          f"{self.out}: no documents generated ({len(self.stats.failures)} failures, see "
          f"{self.out / 'failures.json'}); dataset.jsonl not written. Rerun to retry.")
    header = {"format": FORMAT_VERSION, "spec_name": self.spec.name, "spec_hash": self.spec_hash,
              "backend": self.backend.describe(), "seed": self.seed, "plan": asdict(self.plan),
              "documents_wanted": len(slots), "documents": len(records),
              "stage_counts": {stage: len({p[:k + 1] for p in leaves})
                               for k, stage in enumerate(STAGES)},
              "failures": len(self.stats.failures)}
    summary = export_documents(self.out, records, self.seed, header, self.histogram)
    return summary, self.stats

  # --- stages ----------------------------------------------------------------------------
  def _check_meta(self) -> None:
    meta = {"format": FORMAT_VERSION, "spec_name": self.spec.name, "spec_hash": self.spec_hash,
            "backend": self.backend.describe(), "seed": self.seed}
    old = read_json(self.out / "meta.json")
    if old is not None and old != meta:
      diff = [k for k in meta if old.get(k) != meta[k]]
      raise GenerationError(
          f"{self.out} holds a run with a different {', '.join(diff)} "
          f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out")
    if old is None:
      atomic_write_text(self.out / "spec.yaml", self.spec.to_yaml())
      atomic_write_json(self.out / "meta.json", meta)

  def _expand_tree(self, slots: list[tuple]) -> dict[tuple, Context]:
    frontier = {(): Context(self.spec)}
    for k, stage in enumerate(STAGES):
      want: dict[tuple, int] = {}
      for s in slots:
        if s[:k] in frontier:
          want[s[:k]] = max(want.get(s[:k], 0), s[k] + 1)
      nodes = sorted(want)
      results = self._map(lambda p: self._expand_node(stage, frontier[p], want[p]), nodes,
                          f"{stage:<10}")
      needed = {s[:k + 1] for s in slots}
      nxt = {}
      for p, items in zip(nodes, results):
        for i, item in enumerate(items):
          if p + (i,) in needed:
            nxt[p + (i,)] = frontier[p].child(item, i)
      frontier = nxt
    return frontier

  def _expand_node(self, stage: str, ctx: Context, want: int) -> list[dict]:
    path = self.out / "tree" / ctx.id / "meta.json"
    meta = read_json(path) or {"item": ctx.items[-1] if ctx.items else None, "stage": stage,
                               "items": []}
    items = meta["items"]
    if len(items) < want:
      with self._lock:
        self.stats.expansions += 1
      try:
        new = check_items(stage, self.backend.expand(stage, ctx, items, want - len(items)))
      except Unreachable:
        raise  # no endpoint: every other node would fail the same way
      except Exception as e:  # recorded and retried next run, never fatal
        self._fail(ctx.id or "root", stage, e)
        new = []
      if new:
        meta["items"] = items = items + new[:want - len(items)]
        atomic_write_json(path, meta)
      if len(items) < want and not self._failed(ctx.id or "root", stage):
        self._fail(ctx.id or "root", stage, f"backend gave {len(items)} of {want} items")
    return items[:want]

  def _write_documents(self, slots: list[tuple], leaves: dict) -> list[dict]:
    todo, records = [], {}
    for s in slots:
      path = self._doc_path(s)
      doc = read_json(path)
      if s[:5] not in leaves:
        self.stats.missing += 1
      elif doc is not None:
        self.stats.reused += 1
        records[s] = doc
      else:
        todo.append(s)

    def write(s):
      ctx = leaves[s[:5]]
      try:
        text = self.backend.write_document(ctx, s[5])
        if not text.strip():
          raise ValueError("empty document")
      except Unreachable:
        raise
      except Exception as e:
        self._fail(f"{ctx.id}_{s[5]}", "documents", e)
        return None
      doc = {"text": text}
      atomic_write_json(self._doc_path(s), doc)
      return doc

    for s, doc in zip(todo, self._map(write, todo, "documents ", notify=True)):
      if doc is not None:
        self.stats.generated += 1
        records[s] = doc
      else:
        self.stats.missing += 1
    return [self._record(leaves[s[:5]], s[5], doc) for s, doc in records.items()]

  def _record(self, ctx: Context, variant: int, doc: dict) -> dict:
    return {"text": doc["text"], "source": f"{ctx.id}_{variant}", "domain": ctx.domain["name"],
            "subdomain": ctx.subdomain["name"], "section": ctx.subdomain["section"],
            "assertion": ctx.assertion["text"], "doc_type": ctx.doc_type["name"],
            "idea": ctx.idea["text"], "spec_hash": self.spec_hash, "spec_name": self.spec.name,
            "backend": self.backend.name}

  # --- helpers ---------------------------------------------------------------------------
  def _doc_path(self, s: tuple) -> Path:
    d, sd, a, t, i, r = s
    return self.out / "tree" / f"d{d:02d}/s{sd:02d}/a{a:02d}/t{t:02d}/i{i:03d}_{r}.json"

  def _map(self, fn, items: list, desc: str, notify: bool = False) -> list:
    """fn over items, in order; threads when the backend allows concurrency."""
    out = [None] * len(items)
    bar = tqdm(total=len(items), desc=desc, disable=not self.progress or not items,
               file=sys.stderr, leave=False)
    done = 0
    workers = self.backend.concurrency()
    with bar:
      if workers <= 1:
        for k, item in enumerate(items):
          out[k] = fn(item)
          done += 1
          bar.update(1)
          if notify and self.on_document:
            self.on_document(done)
      else:
        with ThreadPoolExecutor(workers) as pool:
          futures = {pool.submit(fn, item): k for k, item in enumerate(items)}
          try:
            for fut in as_completed(futures):
              out[futures[fut]] = fut.result()
              done += 1
              bar.update(1)
              if notify and self.on_document:
                self.on_document(done)
          except BaseException:
            for fut in futures:
              fut.cancel()
            raise
    return out

  def _fail(self, node: str, stage: str, error) -> None:
    msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    with self._lock:
      self.stats.failures.append({"id": node, "stage": stage, "error": str(msg)[:500]})

  def _failed(self, node: str, stage: str) -> bool:
    with self._lock:
      return any(f["id"] == node and f["stage"] == stage for f in self.stats.failures)

  def _write_failures(self) -> None:
    old = {(f["id"], f["stage"]): f.get("attempts", 1)
           for f in (read_json(self.out / "failures.json") or {}).get("failures", [])}
    fails = sorted(self.stats.failures, key=lambda f: (f["id"], f["stage"]))
    for f in fails:
      f["attempts"] = old.get((f["id"], f["stage"]), 0) + 1
    atomic_write_json(self.out / "failures.json", {"failures": fails})
