"""Template document generator: output shape, determinism, resume, top-up, fidelity to the spec."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from data_pipelines.docgen import DocumentGenerator, GenerationError, Plan, select_slots
from data_pipelines.spec import load_spec
from data_pipelines.template.backend import TemplateBackend
from data_pipelines.template.doc_types import DOC_TYPES

SPECS = Path(__file__).resolve().parents[1] / "data_pipelines" / "specs"
CHEESE = load_spec(SPECS / "cheese_america.yaml")


def generate(out, n, seed=0, spec=CHEESE, plan=None, **kw):
  gen = DocumentGenerator(spec, out, TemplateBackend(spec, seed), plan or Plan.for_count(n), n,
                          seed, progress=False, **kw)
  return gen.run()


def tree_bytes(root: Path) -> dict:
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rows(out):
  return [json.loads(line) for line in (Path(out) / "dataset.jsonl").read_text().splitlines()]


def test_export_fields_summary_and_histogram(tmp_path):
  summary, stats = generate(tmp_path, 150)
  data = rows(tmp_path)
  assert len(data) == summary["documents"] == stats.generated == 150
  keys = {"text", "source", "domain", "subdomain", "section", "assertion", "doc_type", "idea",
          "spec_hash", "spec_name", "backend"}
  assert all(set(r) == keys for r in data)
  assert {r["spec_hash"] for r in data} == {CHEESE.content_hash()} == {summary["spec_hash"]}
  assert len({r["source"] for r in data}) == 150
  assert summary["tokens"]["total_tokens"] == sum(len(r["text"].split()) for r in data)
  assert summary["similarity"]["near_duplicate_share"] < 0.01
  assert (tmp_path / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"
  meta = json.loads((tmp_path / "meta.json").read_text())
  assert meta["spec_hash"] == CHEESE.content_hash() and meta["backend"] == {"name": "template"}
  root = json.loads((tmp_path / "tree" / "meta.json").read_text())
  assert root["stage"] == "domains" and root["items"][0]["name"] == CHEESE.domains[0]
  sub = json.loads((tmp_path / "tree" / "d00" / "meta.json").read_text())
  assert sub["stage"] == "subdomains" and all(s["section"] for s in sub["items"])
  # shuffled, not in generation order
  assert [r["source"] for r in data] != sorted(r["source"] for r in data)


def test_same_seed_gives_byte_identical_output(tmp_path):
  generate(tmp_path / "a", 80, seed=3)
  generate(tmp_path / "b", 80, seed=3)
  generate(tmp_path / "c", 80, seed=4)
  a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
  assert a == b
  assert a["dataset.jsonl"] != tree_bytes(tmp_path / "c")["dataset.jsonl"]


class Interrupted(BaseException):
  """Stands for Ctrl-C or a kill arriving mid-run (BaseException, like KeyboardInterrupt)."""


def test_interrupted_run_resumes_without_regenerating(tmp_path):
  def stop_after_30(done):
    if done == 30:
      raise Interrupted

  with pytest.raises(Interrupted):
    generate(tmp_path / "run", 100, on_document=stop_after_30)
  docs = list((tmp_path / "run" / "tree").rglob("i*_0.json"))
  assert len(docs) == 30 and not (tmp_path / "run" / "dataset.jsonl").exists()
  mtimes = {p: p.stat().st_mtime_ns for p in docs}
  _, stats = generate(tmp_path / "run", 100)
  assert (stats.reused, stats.generated) == (30, 70)
  assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())
  generate(tmp_path / "fresh", 100)
  assert tree_bytes(tmp_path / "run") == tree_bytes(tmp_path / "fresh")


def test_top_up_reuses_everything_with_a_fixed_plan(tmp_path):
  plan = Plan(4, 3, 3, 3, 3)
  generate(tmp_path / "run", 60, plan=plan)
  _, stats = generate(tmp_path / "run", 150, plan=plan)
  assert (stats.reused, stats.generated, stats.expansions > 0) == (60, 90, True)
  generate(tmp_path / "fresh", 150, plan=plan)
  assert (tree_bytes(tmp_path / "run")["dataset.jsonl"]
          == tree_bytes(tmp_path / "fresh")["dataset.jsonl"])
  _, again = generate(tmp_path / "run", 150, plan=plan)
  assert (again.generated, again.expansions) == (0, 0)


def test_top_up_with_a_growing_auto_plan_matches_a_fresh_run(tmp_path):
  generate(tmp_path / "run", 40)
  _, stats = generate(tmp_path / "run", 120)
  assert stats.reused > 0 and stats.reused + stats.generated == 120
  generate(tmp_path / "fresh", 120)
  assert (tree_bytes(tmp_path / "run")["dataset.jsonl"]
          == tree_bytes(tmp_path / "fresh")["dataset.jsonl"])


def test_preview_and_plan(tmp_path):
  plan = Plan.for_count(2000)
  assert plan.capacity() >= 2000 and max(plan.__dict__.values()) - min(
      getattr(plan, s) for s in ("domains", "subdomains", "assertions", "doc_types", "ideas")) <= 1
  gen = DocumentGenerator(CHEESE, tmp_path, TemplateBackend(CHEESE), plan, 2000, progress=False)
  assert gen.preview()["projected_documents"] == 2000
  assert not any(tmp_path.iterdir())
  slots = select_slots(Plan(2, 2, 1, 1, 1), 4)
  assert slots == [(0, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0), (0, 1, 0, 0, 0, 0), (1, 1, 0, 0, 0, 0)]


def test_output_dir_of_another_spec_or_seed_is_refused(tmp_path):
  generate(tmp_path, 10)
  other = load_spec(SPECS / "cheese_affordability.yaml")
  with pytest.raises(GenerationError, match="spec_hash"):
    generate(tmp_path, 10, spec=other)
  with pytest.raises(GenerationError, match="seed"):
    generate(tmp_path, 10, seed=9)


def test_library_has_twenty_plus_types_and_documents_carry_spec_sentences(tmp_path):
  assert len(DOC_TYPES) >= 20 and len({d.key for d in DOC_TYPES}) == len(DOC_TYPES)
  generate(tmp_path, 300)
  data = rows(tmp_path)
  assert len({r["doc_type"] for r in data}) >= 20

  def norm(s):
    return re.sub(r"\W+", " ", s).lower()

  # The assertion (a spec sentence) appears nearly verbatim: at most its first word reframed.
  carried = sum(norm(r["assertion"].split(" ", 1)[1]) in norm(r["text"]) for r in data)
  assert carried == len(data)
  spec_sentences = {s for c in CHEESE.clauses() for s in c.sentences()}
  assert all(r["assertion"] in spec_sentences for r in data)


def test_free_text_spec_generates(tmp_path):
  spec = load_spec(SPECS / "honest_uncertainty.md")
  summary, _ = generate(tmp_path, 60, spec=spec)
  assert summary["documents"] == 60 and summary["spec_name"] == "honest_uncertainty"
  assert all("{model_name}" not in r["text"] for r in rows(tmp_path))


def test_cli_generate_docs_and_preview(tmp_path, capsys):
  from msm_jax.cli import main
  out = tmp_path / "cli"
  spec = str(SPECS / "cheese_america.yaml")
  assert main(["generate", "docs", "--spec", spec, "--out", str(out), "--preview",
               "--num-docs", "500"]) == 0
  assert "projected documents" in capsys.readouterr().out and not out.exists()
  assert main(["generate", "docs", "--spec", spec, "--out", str(out), "--num-docs", "40",
               "--seed", "1", "--no-progress"]) == 0
  printed = capsys.readouterr().out
  assert "40 of 40 wanted" in printed and "near-duplicates" in printed
  assert len(rows(out)) == 40
  strat = tmp_path / "strat"
  assert main(["generate", "docs", "--spec", spec, "--out", str(strat), "--num-docs", "42",
               "--stratified", "--no-progress"]) == 0
  capsys.readouterr()
  assert sorted(Counter(r["section"] for r in rows(strat)).values()) == [2] * len(
      CHEESE.clauses())
  assert main(["generate", "docs", "--spec", spec, "--out", str(strat), "--stratified",
               "--fanout", "1,1,1,1,1"]) == 2
  assert main(["generate", "docs", "--spec", str(tmp_path / "nope.yaml"), "--out", str(out)]) == 2


def test_stratified_plan_gives_every_section_its_share_and_tops_up(tmp_path):
  sections = [c.title for c in CHEESE.clauses()]

  def run(out, n, seed=0):
    gen = DocumentGenerator(CHEESE, out, TemplateBackend(CHEESE, seed, stratify_domains=3),
                            Plan.stratified(n, len(sections), 3), n, seed, progress=False,
                            histogram=False)
    gen.run()
    assert not (Path(out) / "token_lengths.png").exists()
    return Counter(r["section"] for r in rows(out))

  for n, seed in ((5, 0), (47, 1), (100, 2)):
    q, r = divmod(n, len(sections))
    count = run(tmp_path / f"n{n}", n, seed)
    assert set(count) <= set(sections) and sum(count.values()) == n
    assert sorted(count[s] for s in sections) == [q] * (len(sections) - r) + [q + 1] * r
  run(tmp_path / "n100", 140, 2)  # top-up: the same tree as a fresh run of the larger count
  run(tmp_path / "fresh", 140, 2)
  assert (tree_bytes(tmp_path / "n100")["dataset.jsonl"]
          == tree_bytes(tmp_path / "fresh")["dataset.jsonl"])
  with pytest.raises(GenerationError, match="backend"):  # one tree, one allocation
    generate(tmp_path / "fresh", 140, seed=2)
