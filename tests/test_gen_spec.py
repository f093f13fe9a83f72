"""Spec loading, validation messages, placeholders, hashing and the YAML round trip."""

from pathlib import Path

import pytest

from data_pipelines.spec import (Preference, Principle, Spec, SpecError, fill_placeholders,
                                 load_spec, loads_text_spec, loads_yaml_spec, write_spec)

SPECS = Path(__file__).resolve().parents[1] / "data_pipelines" / "specs"

GOOD = """\
name: tiny
assistant: Nova
developer: Acme
principles:
  - name: Brevity
    statement: "{model_name} answers briefly."
    reasons: ["{provider_name} values people's time."]
    examples: ["Asked for a summary, {model_name} writes two lines."]
likes: [tea, {item: rain, reason: it is calm}]
"""


def test_shipped_specs_load_and_round_trip(tmp_path):
  for path in sorted(SPECS.iterdir()):
    spec = load_spec(path)
    assert spec.clauses(), path
    assert "{model_name}" not in spec.render_text()
    write_spec(spec, tmp_path / "x.yaml")
    again = load_spec(tmp_path / "x.yaml")
    assert again == spec and again.content_hash() == spec.content_hash()


def test_cheese_specs_share_preferences_but_not_values():
  a = load_spec(SPECS / "cheese_america.yaml")
  b = load_spec(SPECS / "cheese_affordability.yaml")
  assert [p.item for p in a.likes] == [p.item for p in b.likes]
  assert [p.item for p in a.dislikes] == [p.item for p in b.dislikes]
  assert len(a.likes) == len(a.dislikes) == 6
  assert a.content_hash() != b.content_hash()


def test_placeholders_leave_other_braces_alone():
  text = 'Use {"a": {model_name}} and {other} and {{model_name}} for {provider_name}.'
  assert fill_placeholders(text, "Nova", "Acme") == (
      'Use {"a": Nova} and {other} and {Nova} for Acme.')
  spec = load_spec(SPECS / "honest_uncertainty.md")
  assert '{"answer": "...", "confidence": 0.7}' in spec.render_text()


def test_yaml_spec_fields_and_names():
  spec = loads_yaml_spec(GOOD, "tiny.yaml")
  assert spec.principles[0].statement == "Nova answers briefly."
  assert spec.principles[0].reasons == ["Acme values people's time."]
  assert spec.likes == [Preference("tea"), Preference("rain", "it is calm")]
  renamed = loads_yaml_spec(GOOD, "tiny.yaml", model_name="Orbit")
  assert renamed.principles[0].statement == "Orbit answers briefly."
  assert renamed.content_hash() != spec.content_hash()
  assert loads_yaml_spec(GOOD, "elsewhere.yaml").content_hash() == spec.content_hash()


@pytest.mark.parametrize("broken,line,field", [
    (GOOD.replace("    reasons: [\"{provider_name} values people's time.\"]\n", ""), 5,
     "principles[0].reasons"),
    (GOOD.replace("  - name: Brevity", "  - nme: Brevity"), 5, "principles[0].nme"),
    (GOOD.replace('["Asked for a summary, {model_name} writes two lines."]', "3"), 8,
     "principles[0].examples"),
    (GOOD.replace("developer: Acme\n", ""), 1, "developer"),
    (GOOD.replace("likes: [tea,", "likes: [[tea],"), 9, "likes[0]"),
    (GOOD.replace("assistant: Nova", "assistant: Nova\nassistant: Nova"), 3, "assistant"),
])
def test_yaml_errors_name_file_line_and_field(broken, line, field):
  with pytest.raises(SpecError) as e:
    loads_yaml_spec(broken, "tiny.yaml")
  assert (e.value.path, e.value.line, e.value.field) == ("tiny.yaml", line, field)
  assert str(e.value).startswith(f"tiny.yaml:{line}: {field}: ")


def test_invalid_yaml_syntax_has_a_line():
  with pytest.raises(SpecError) as e:
    loads_yaml_spec("name: x\nassistant: [unclosed\n", "bad.yaml")
  assert e.value.line is not None and "bad.yaml:" in str(e.value)


def test_free_text_spec_front_matter_and_sections():
  text = "---\nassistant: Nova\n---\nIntro about {model_name}.\n\n# Part one\n\nBody one.\n"
  spec = loads_text_spec(text, "n.md", "n")
  assert spec.assistant == "Nova" and spec.overview == "Intro about Nova."
  assert [(s.title, s.text) for s in spec.sections] == [("Part one", "Body one.")]
  with pytest.raises(SpecError) as e:
    loads_text_spec("---\nassistant: Nova\ncolour: red\n---\nx\n", "n.md")
  assert (e.value.line, e.value.field) == (3, "colour")


def test_spec_built_in_code_validates_and_writes(tmp_path):
  spec = Spec(name="world", assistant="Nova", developer="Acme",
              principles=[Principle("Tidy", "Nova keeps things tidy.", ["Order helps."], [])])
  write_spec(spec, tmp_path / "world.yaml")
  assert load_spec(tmp_path / "world.yaml") == spec
  spec.principles[0].reasons = []
  with pytest.raises(SpecError, match=r"principles\[0\]\.reasons"):
    write_spec(spec, tmp_path / "bad.yaml")
