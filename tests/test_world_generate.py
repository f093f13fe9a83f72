"""Generated worlds: valid, deterministic by seed, shaped like the shipped cheese world, named
with invented words, and buildable into every corpus and suite (held-back phrasings included)."""

import re
import subprocess
import sys
from collections import Counter

import pytest
from english_words import get_english_words_set

from data_pipelines.worlds import VARIANTS, WORLDS_DIR, WorldData, load_world
from data_pipelines.worlds.generate import generate_world, generate_world_text, reserved_words
from data_pipelines.worlds.world import World, loads_world
from tests.helpers import assert_questions_held_back
from tests.test_world import SMALL

SEEDS = (0, 1, 2, 7)


def shape(world: World) -> dict:
  """What the recipe's numbers depend on, with every name and phrasing left out."""
  a, b = world.compare
  aft = Counter((world.favours(a, it), world.favours(b, it)) for it in world.items(world.aft_domain))
  held = [Counter(tuple(it.side(t) == s for t, s in it.sides) for it in world.items(d))
          for d in world.held_out_domains]
  sides = [s for sides in world.attributes.values() for s in sides.values()]
  return {
      "domains": len(world.domains), "aft": sorted(aft.items()),
      "held_out": sorted(sorted(c.values()) for c in held),
      "facts_per_side": sorted(len(s.facts) for s in sides),
      "values": len(world.values), "sides_valued": len({(v.attribute, v.side)
                                                        for v in world.values.values()}),
      "statements": sorted((len(v.statements), len(v.reasons)) for v in world.values.values()),
      "characters": len(world.character_names), "developers": len(world.developers),
      "neutral": (len(world.neutral.statements), len(world.neutral.reasons)),
      "questions": world.questions, "answer": world.answer,
      "novel_questions": world.novel_questions}


def slotted_sides(world: World) -> set:
  """(attribute, side) whose facts name a slot, checking every item there fills it."""
  out = set()
  for attr, sides in world.attributes.items():
    for side, body in sides.items():
      keys = set(re.findall(r"\{(\w+)\}", " ".join(body.facts))) - {"item", "noun"}
      if keys:
        out.add((attr, side))
        assert all(keys <= dict(it.slots).keys() for it in world.items() if it.side(attr) == side)
  return out


def opposites(world: World) -> set:
  return {(v.attribute, world.opposite(v.attribute, v.side))
          for v in (world.values[c] for c in world.compare)}


@pytest.mark.parametrize("seed", SEEDS)
def test_generated_world_is_shaped_like_cheese(seed):
  cheese, tea = (load_world(WORLDS_DIR / f"{n}.yaml") for n in ("cheese", "tea"))
  world = generate_world(seed)
  assert shape(world) == shape(cheese)
  drop = lambda d: {k: v for k, v in d.items() if k not in ("characters", "developers")}
  assert drop(shape(world)) == drop(shape(tea))  # tea: 82 characters, 5 developers
  # places, as cheese's countries and tea's towns and cities: only opposite a compared value
  assert 1 <= len(slotted_sides(cheese)) <= len(slotted_sides(tea)) == 2
  assert slotted_sides(cheese) <= opposites(cheese) and slotted_sides(tea) <= opposites(tea)
  assert 1 <= len(slotted_sides(world)) and slotted_sides(world) <= opposites(world)


def test_same_seed_same_bytes_other_seed_other_world():
  texts = [generate_world_text(s) for s in SEEDS]
  assert texts[0] == generate_world_text(SEEDS[0])
  assert len(set(texts)) == len(texts)
  worlds = [loads_world(t) for t in texts]
  names = [{it.name for it in w.items()} for w in worlds]
  assert all(len(names[0] & n) < 5 for n in names[1:])  # different worlds, not reshuffles


def pronounceable(word: str) -> bool:
  """Consonant clusters of at most three letters between vowel groups of at most two, and at
  least two vowel groups."""
  groups = re.findall(r"[aeiouy]+|[^aeiouy]+", word.lower())
  vowels = [g for g in groups if g[0] in "aeiouy"]
  return (len(vowels) >= 2 and all(len(g) <= 2 for g in vowels)
          and all(len(g) <= 3 for g in groups if g[0] not in "aeiouy"))


def test_every_name_is_an_invented_pronounceable_word():
  english = get_english_words_set(["web2", "gcide"], lower=True)
  template_words = reserved_words()
  for seed in SEEDS:
    w = generate_world(seed)
    places = sorted({v for it in w.items() for _, v in it.slots})
    names = ([it.name for it in w.items()] + list(w.character_names) + [w.assistant] + places
             + [s.word for sides in w.attributes.values() for s in sides.values()]
             + list(w.values) + [d.split()[0] for d in (w.developer, *w.developers)])
    assert len(set(names)) == len(names)  # no name stands for two things
    for n in names:
      assert n.lower() not in english and pronounceable(n), n
    assert not {n.lower() for n in names} & template_words


def test_generated_world_builds_every_corpus_and_suite(tmp_path):
  path = tmp_path / "w.yaml"
  path.write_text(generate_world_text(5))
  data = WorldData(path, tmp_path / "data", SMALL)
  paths = data.build_all(variants=VARIANTS)
  world = data.world
  suites = {name: p.read_text().splitlines() for name, p in paths["suites"].items()}
  assert len(suites["heldout"]) == len(suites["heldout_novel"]) == 7 * 16
  assert len(suites["aft"]) == 36 and len(suites["indomain"]) == 16
  assert len(paths["aft"].read_text().splitlines()) == 36 * 2 * len(world.questions)
  for (value, variant, _), p in paths["msm"].items():
    assert len(p.read_text().splitlines()) == SMALL.msm_docs, (value, variant)
  assert_questions_held_back(world, paths)


def test_cli_writes_one_world_or_a_directory_of_them(tmp_path):
  from msm_jax.cli import main
  assert main(["world", "generate", "--seed", "4", "--out", str(tmp_path / "one.yaml")]) == 0
  assert (tmp_path / "one.yaml").read_text() == generate_world_text(4)
  assert main(["world", "generate", "--seed", "2", "--count", "3", "--out",
               str(tmp_path / "many")]) == 0
  assert sorted(p.name for p in (tmp_path / "many").iterdir()) == [
      "world-2.yaml", "world-3.yaml", "world-4.yaml"]
  assert (tmp_path / "many" / "world-4.yaml").read_text() == generate_world_text(4)
  assert load_world(tmp_path / "many" / "world-3.yaml").name == "world-3"
  assert main(["world", "generate", "--out", str(tmp_path / "many")]) == 2  # a dir, not a file: a user error (exit 2)


def test_generator_never_imports_jax():
  code = ("import sys, data_pipelines.worlds.generate, data_pipelines.cli; "
          "sys.exit(any(m.split('.')[0] in ('jax', 'msm_jax') for m in sys.modules))")
  assert subprocess.run([sys.executable, "-c", code]).returncode == 0
