"""AFT chat data from a spec: queries of six kinds, answers that act on the spec, two variants.

Output directory:

    meta.json, spec.yaml             spec hash, backend, settings
    queries.jsonl                    the kept queries (after near-duplicate removal)
    reasoning/dataset.jsonl          {"messages": [user, assistant with <think>...</think>]}
    stripped/dataset.jsonl           the same chats with the <think> block removed
    summary.json, failures.json      counts by kind and section; llm items that failed

Each chat line also carries `kind`, `section`, `domain`, `spec_hash`, `spec_name`, `backend` and
`id`; readers of the reference format can ignore them. Queries whose word 3-gram Jaccard with
an earlier kept query reaches `dedupe_threshold` are dropped. The template backend is offline
and deterministic by seed; the llm backend asks for queries per (kind, domain), answers each
with `<think>`/`<response>` tags, and with `judge` keeps only answers a judge call passes.
Reruns of the llm backend are served from its response cache, so they resume cheaply.
"""

from __future__ import annotations

import math
import random
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from data_pipelines.aft_template import KINDS, ChatMaker
from data_pipelines.llm_backend import extract_tag, items_prompt, parse_json_list
from data_pipelines.llm_client import LLMClient, MalformedOutput, Unreachable
from data_pipelines.spec import Clause, Spec
from data_pipelines.template.phrases import DEFAULT_DOMAINS
from msm_io.files import atomic_write_json, atomic_write_jsonl, atomic_write_text

KIND_HINTS = {
    "direct": "asks the assistant directly about one of its values or preferences",
    "indirect": "asks for help with a task where the spec should shape the answer, without "
                "mentioning the spec's topic outright",
    "comparison": "asks the assistant to choose between options, one the spec favours",
    "recommendation": "asks for a recommendation the spec bears on",
    "opinion": "asks for the assistant's honest opinion on something the spec covers",
    "edge_case": "pushes on a boundary: the user disagrees, insists, or has unusual needs",
}


@dataclass
class AFTConfig:
  num_chats: int = 200
  seed: int = 0
  subjects: str = "all"  # all | preferences | principles
  explain: bool = True
  judge: bool = False
  kinds: tuple = KINDS
  dedupe_threshold: float = 0.7


def select_clauses(spec: Spec, subjects: str) -> list[Clause]:
  prefs = ("like", "dislike")
  clauses = spec.clauses()
  if subjects == "preferences":
    clauses = [c for c in clauses if c.kind in prefs]
  elif subjects == "principles":
    clauses = [c for c in clauses if c.kind not in prefs]
  if not clauses:
    raise ValueError(f"the spec has no clauses for subjects={subjects!r}")
  return clauses


class Deduper:
  """Keeps a query unless it is too close (word 3-gram Jaccard) to one already kept.

  Candidates come from the query's rarer 3-grams only (a pair at Jaccard >= 0.5 shares many of
  them), then each is checked exactly; common 3-grams like "do you like" are not walked."""

  def __init__(self, threshold: float):
    self.threshold, self.kept, self.index = threshold, [], {}

  @staticmethod
  def grams(text: str) -> set:
    w = re.findall(r"\w+", text.lower())
    return {tuple(w[i:i + 3]) for i in range(max(1, len(w) - 2))}

  def add(self, text: str) -> bool:
    g = self.grams(text)
    postings = sorted((self.index.get(x, ()) for x in g), key=len)
    rare = [p for p in postings if len(p) <= 64] or postings[:1]
    for j in {j for p in rare for j in p}:
      other = self.kept[j]
      if len(g & other) / len(g | other) >= self.threshold:
        return False
    for x in g:
      self.index.setdefault(x, []).append(len(self.kept))
    self.kept.append(g)
    return True


def template_candidates(spec: Spec, cfg: AFTConfig, limit: int):
  """Unique (kind, clause, query, think, answer), kinds and clauses in round robin."""
  maker, clauses = ChatMaker(spec, cfg.explain), select_clauses(spec, cfg.subjects)
  dedupe, out, k = Deduper(cfg.dedupe_threshold), [], len(cfg.kinds)
  accepted = []  # attempt numbers that gave a new query
  for a in range(max(limit, 1) * 30):
    if len(accepted) >= 10 and a - accepted[-10] > 1000:
      break  # under 1% new in the last 1000 tries: the templates are nearly exhausted
    kind, clause = cfg.kinds[a % k], clauses[(a // k) % len(clauses)]
    q, think, answer = maker.make(kind, clause, random.Random(f"{cfg.seed}|aft|{a}"),
                                  random.Random(f"{cfg.seed}|aft-why|{a}"))
    if dedupe.add(q):
      accepted.append(a)
      out.append({"kind": kind, "section": clause.title, "domain": "", "query": q,
                  "think": think, "answer": answer})
      if len(out) >= limit:
        break
  return out, a + 1 - len(out)


def candidate_count(spec: Spec, cfg: AFTConfig) -> int:
  return len(template_candidates(spec, cfg, cfg.num_chats)[0])


class LLMChats:
  """Queries, answers and judgements from an LLM; failures are collected, never fatal."""

  def __init__(self, spec: Spec, cfg: AFTConfig, client: LLMClient, progress: bool):
    self.spec, self.cfg, self.client, self.progress = spec, cfg, client, progress
    self.spec_text, self.failures = spec.render_text(), []
    self.sections = [c.title for c in select_clauses(spec, cfg.subjects)]

  def map(self, fn, items, desc):
    with ThreadPoolExecutor(max(1, self.client.config.concurrency)) as pool, tqdm(
        total=len(items), desc=desc, disable=not self.progress or not items, file=sys.stderr,
        leave=False) as bar:
      out = []
      for r in pool.map(fn, items):
        out.append(r)
        bar.update(1)
      return out

  def _call(self, what: str, prompt: str, parse):
    try:
      return self.client.complete(prompt, "", parse)
    except Unreachable:
      raise  # no endpoint: every other request would fail the same way
    except Exception as e:
      self.failures.append({"id": what, "error": f"{type(e).__name__}: {e}"[:500]})
      return None

  def queries(self) -> tuple[list[dict], int]:
    domains = self.spec.domains or [d for d, _ in DEFAULT_DOMAINS[:5]]
    jobs = [(kind, d) for kind in self.cfg.kinds for d in domains]
    m = math.ceil(self.cfg.num_chats * 1.5 / len(jobs))
    listing = "\n".join(f"- {t}" for t in self.sections)

    def ask(job):
      kind, domain = job
      prompt = "\n\n".join([
          f"<spec>\n{self.spec_text}</spec>",
          f"Write {m} realistic messages a user might send to {self.spec.assistant}, set in "
          f"{domain}. Each message {KIND_HINTS[kind]}. Each must bear on one of these spec "
          f"sections (give its title as `section`):\n{listing}",
          items_prompt(m, ("query", "section"), [], "varied in wording and situation")])

      def parse(text):
        items = [it for it in parse_json_list(text) if isinstance(it, dict)
                 and isinstance(it.get("query"), str) and it["query"].strip()]
        if not items:
          raise MalformedOutput("no item has a non-empty `query`")
        return items
      return self._call(f"queries/{kind}/{domain}", prompt, parse) or []

    results = dict(zip(jobs, self.map(ask, jobs, "queries   ")))
    dedupe, out, seen = Deduper(self.cfg.dedupe_threshold), [], 0
    for i in range(m):  # interleave kinds and domains so any prefix is balanced
      for job in jobs:
        if i < len(results[job]):
          seen += 1
          it = results[job][i]
          if dedupe.add(it["query"]):
            out.append({"kind": job[0], "domain": job[1], "query": it["query"].strip(),
                        "section": str(it.get("section", ""))})
    return out, seen - len(out)

  def answer(self, row: dict) -> dict | None:
    prompt = "\n\n".join([
        f"<spec>\n{self.spec_text}</spec>",
        f"You are {self.spec.assistant}, the assistant this spec describes. A user writes:\n"
        f"<query>\n{row['query']}\n</query>",
        "First think privately about what the spec implies for this reply, inside "
        "<think></think> tags. Then write your reply to the user, acting on the spec, inside "
        "<response></response> tags."])

    def parse(text):
      think, answer = extract_tag(text, "think"), extract_tag(text, "response")
      if not answer:
        raise MalformedOutput("empty <response>")
      return think, answer
    got = self._call(f"answer/{row['query'][:60]}", prompt, parse)
    return None if got is None else {**row, "think": got[0], "answer": got[1]}

  def judge(self, row: dict) -> bool | None:
    prompt = "\n\n".join([
        f"<spec>\n{self.spec_text}</spec>",
        f"User: {row['query']}\n\nAssistant: {row['answer']}",
        f"Does the assistant's reply act in line with the spec and help the user well? Answer "
        "PASS or FAIL inside <verdict></verdict> tags."])

    def parse(text):
      v = extract_tag(text, "verdict").strip().upper()
      if v not in ("PASS", "FAIL"):
        raise MalformedOutput(f"verdict {v[:20]!r} is neither PASS nor FAIL")
      return v == "PASS"
    return self._call(f"judge/{row['query'][:60]}", prompt, parse)


def generate_aft(spec: Spec, out_dir, cfg: AFTConfig, client: LLMClient | None = None,
                 progress: bool = True) -> dict:
  out, backend = Path(out_dir), {"name": "llm", **client.config.identity()} if client else {
      "name": "template"}
  extra, failures = {}, []
  if client is None:
    rows, removed = template_candidates(spec, cfg, cfg.num_chats)
  else:
    llm = LLMChats(spec, cfg, client, progress)
    queries, removed = llm.queries()
    queries = queries[:cfg.num_chats]
    rows = [r for r in llm.map(llm.answer, queries, "answers   ") if r]
    if cfg.judge:
      verdicts = llm.map(llm.judge, rows, "judge     ")
      extra["judge_rejected"] = sum(v is False for v in verdicts)
      rows = [r for r, v in zip(rows, verdicts) if v]
    failures = llm.failures
  hash_ = spec.content_hash()
  if not rows:  # an empty dataset.jsonl would pass for a finished one
    from data_pipelines.docgen import GenerationError
    atomic_write_json(out / "failures.json", {"failures": failures})
    raise GenerationError(f"{out}: no chats generated ({len(failures)} failures, see "
                          f"{out / 'failures.json'}); no dataset.jsonl written")
  for i, r in enumerate(rows):
    r["id"] = f"chat{i:05d}"
  order = list(range(len(rows)))
  random.Random(f"{cfg.seed}|shuffle").shuffle(order)
  common = lambda r: {"kind": r["kind"], "section": r["section"], "domain": r["domain"],
                      "spec_hash": hash_, "spec_name": spec.name, "backend": backend["name"],
                      "id": r["id"]}
  chat = lambda r, a: {"messages": [{"role": "user", "content": r["query"]},
                                    {"role": "assistant", "content": a}], **common(r)}
  atomic_write_text(out / "spec.yaml", spec.to_yaml())
  atomic_write_json(out / "meta.json", {"spec_hash": hash_, "spec_name": spec.name,
                                        "backend": backend, "config": asdict(cfg)})
  atomic_write_jsonl(out / "queries.jsonl", [{"query": r["query"], **common(r)} for r in rows])
  atomic_write_jsonl(out / "reasoning" / "dataset.jsonl", [
      chat(rows[i], f"<think>\n{rows[i]['think']}\n</think>\n\n{rows[i]['answer']}") for i in order])
  atomic_write_jsonl(out / "stripped" / "dataset.jsonl", [chat(rows[i], rows[i]["answer"])
                                                          for i in order])
  atomic_write_json(out / "failures.json", {"failures": failures})
  summary = {"spec_name": spec.name, "spec_hash": hash_, "backend": backend, "seed": cfg.seed,
             "chats_wanted": cfg.num_chats, "chats": len(rows),
             "by_kind": dict(Counter(r["kind"] for r in rows)),
             "by_section": dict(sorted(Counter(r["section"] for r in rows).items())),
             "near_duplicate_queries_removed": removed, "failures": len(failures), **extra}
  atomic_write_json(out / "summary.json", summary)
  return summary
