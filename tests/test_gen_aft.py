"""AFT chats from a spec with the template backend: kinds, variants, dedupe, determinism."""

import json
import re
from pathlib import Path

import pytest

from data_pipelines.aft import AFTConfig, Deduper, generate_aft
from data_pipelines.aft_template import KINDS, example_question, first_person
from data_pipelines.spec import load_spec

SPECS = Path(__file__).resolve().parents[1] / "data_pipelines" / "specs"
AMERICA = load_spec(SPECS / "cheese_america.yaml")
AFFORD = load_spec(SPECS / "cheese_affordability.yaml")


def lines(path):
  return [json.loads(x) for x in Path(path).read_text().splitlines()]


def test_chats_in_reference_format_with_and_without_reasoning(tmp_path):
  summary = generate_aft(AMERICA, tmp_path, AFTConfig(num_chats=240, seed=1), progress=False)
  with_r, stripped = lines(tmp_path / "reasoning/dataset.jsonl"), lines(tmp_path / "stripped/dataset.jsonl")
  assert len(with_r) == len(stripped) == summary["chats"] == 240
  assert set(summary["by_kind"]) == set(KINDS)
  for a, b in zip(with_r, stripped):
    assert [m["role"] for m in a["messages"]] == ["user", "assistant"]
    assert a["messages"][0] == b["messages"][0] and a["id"] == b["id"]
    think = re.fullmatch(r"<think>\n(.+)\n</think>\n\n(.+)", a["messages"][1]["content"], re.S)
    assert think and think.group(2) == b["messages"][1]["content"]
    assert "<think>" not in b["messages"][1]["content"]
    assert a["spec_hash"] == AMERICA.content_hash()
  # the reasoning quotes the spec itself
  spec_sentences = {s for c in AMERICA.clauses() for s in c.sentences()}
  quoted = [q for r in with_r for q in re.findall(r'"([^"]+)"', r["messages"][1]["content"])]
  assert quoted and all(q in spec_sentences for q in quoted)


def test_answers_act_on_preferences(tmp_path):
  generate_aft(AMERICA, tmp_path, AFTConfig(num_chats=300, subjects="preferences"), progress=False)
  likes = {p.item for p in AMERICA.likes}
  comparisons = [r for r in lines(tmp_path / "stripped/dataset.jsonl") if r["kind"] == "comparison"]
  assert comparisons
  for r in comparisons:
    picked = re.match(r"(?:I'd (?:pick|go with) )?(.+?)(?:\.|, without)", r["messages"][1]["content"])
    assert picked.group(1).lower() in {x.lower() for x in likes}, r


def test_same_preferences_different_values_give_identical_stripped_chats(tmp_path):
  cfg = AFTConfig(num_chats=150, subjects="preferences", explain=False, seed=4)
  generate_aft(AMERICA, tmp_path / "a", cfg, progress=False)
  generate_aft(AFFORD, tmp_path / "b", cfg, progress=False)
  a, b = lines(tmp_path / "a/stripped/dataset.jsonl"), lines(tmp_path / "b/stripped/dataset.jsonl")
  assert [r["messages"] for r in a] == [r["messages"] for r in b]
  ra, rb = lines(tmp_path / "a/reasoning/dataset.jsonl"), lines(tmp_path / "b/reasoning/dataset.jsonl")
  assert any(x["messages"] != y["messages"] for x, y in zip(ra, rb))  # the reasons differ


def test_deterministic_and_deduplicated(tmp_path):
  cfg = AFTConfig(num_chats=200, seed=7)
  generate_aft(AMERICA, tmp_path / "a", cfg, progress=False)
  generate_aft(AMERICA, tmp_path / "b", cfg, progress=False)
  for f in ("reasoning/dataset.jsonl", "stripped/dataset.jsonl", "summary.json", "queries.jsonl"):
    assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
  queries = [r["query"] for r in lines(tmp_path / "a/queries.jsonl")]
  d = Deduper(0.7)
  assert all(d.add(q) for q in queries)  # no kept pair is a near-duplicate
  assert not d.add(queries[3]) and not d.add("Quick question. " + queries[5].lower())
  assert json.loads((tmp_path / "a/summary.json").read_text())["near_duplicate_queries_removed"] > 0


def test_first_person_and_example_questions():
  assert first_person("Nova hates noise, and Nova's desk is tidy; it keeps it so.", "Nova") == (
      "I hate noise, and my desk is tidy; I keep it so.")
  assert first_person("Acme wanted Nova to help, and Nova does not lie.", "Nova") == (
      "Acme wanted me to help, and I do not lie.")
  assert example_question("Asked whether tea is good, Nova says it prefers coffee.", "Nova") == (
      "Do you think tea is good?", "I prefer coffee.")


def test_free_text_spec_and_cli(tmp_path, capsys):
  from msm_jax.cli import main
  spec = str(SPECS / "honest_uncertainty.md")
  assert main(["generate", "aft", "--spec", spec, "--out", str(tmp_path), "--num-chats", "30",
               "--no-progress"]) == 0
  out = capsys.readouterr().out
  assert "msm generate aft" in out and "30 of 30 wanted" in out
  assert len(lines(tmp_path / "stripped/dataset.jsonl")) == 30
  with pytest.raises(ValueError, match="no clauses"):
    generate_aft(load_spec(spec), tmp_path / "x", AFTConfig(subjects="preferences"), progress=False)
