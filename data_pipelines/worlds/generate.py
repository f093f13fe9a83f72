"""Random worlds in the YAML format of cheese.yaml and tea.yaml: `generate_world(seed)`.

A recipe tuned on cheese and tea can only be judged on worlds nobody tuned it for. This writes
such worlds from a seed, with the shape of the shipped ones held fixed and their content drawn:

Fixed (as in both shipped worlds): 8 domains; the AFT domain holds 20 items (6 favoured by both
compared values, 6 by neither, 4 by each one alone), each held-out domain 16 (4 per combination
of sides, in random order); 2 attributes of 2 sides with 5 fact phrasings each; 4 values (one
per side) with 4 statements and 3 reasons; the compared pair is the first side of each
attribute; 80 character names, 6 developers, a neutral profile (3 statements, 2 reasons); the
question and answer templates (the shipped ones, whose placement of the name was tuned), and
the held-back `novel_questions` (the loader's default). Slots name a place on the side opposite
each compared value (cheese's `country`, tea's `town` and `city`).

Randomised by the seed: every name (assistant, developers, characters, items, places, the
attributes' side words and value nouns: pronounceable pseudo-words from a syllable generator,
never an English word nor one of the document templates, so no name doubles as ordinary prose);
which fact phrasings each side gets besides "X is <word>." and "X is a <word> <noun>." (3 from a
bank, naming the place on a slotted side), which title and reasons each value gets (its
statements follow cheese's four patterns); the domain nouns
(drawn from a pool of ordinary nouns); how many attributes carry a place slot (1 or 2) and how
many places each has; the held-out domains' item sides and order. Same seed, same bytes (for
one version of the document templates and of `english-words`, which decide what words a name
may not be); the text is checked by the loader before it is written. No jax, no msm_jax.
"""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path

import yaml
from english_words import get_english_words_set

from msm_io.files import atomic_write_text
from data_pipelines.worlds.world import World, loads_world

ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "pl", "r", "s",
          "sk", "st", "t", "th", "tr", "v", "z", "sh")
NUCLEI = ("a", "e", "i", "o", "u", "ai", "ei", "ou", "oa", "ia")
MIDDLES = ("l", "n", "r", "s", "th", "x", "rn", "lt", "sk", "nd", "rd", "lm", "sp", "k", "m", "v")
FINALS = ("", "n", "s", "r", "l", "x", "m")
ADJ_SUFFIXES = ("ic", "ish", "ean", "ine", "ous", "al")
NOUN_SUFFIXES = ("ity", "ery", "ance", "ism", "ness")
PLACE_SUFFIXES = ("ton", "by", "port", "ford", "wick", "moor", "dale", "field", "ham", "bridge")
DEV_SUFFIXES = ("Labs", "AI", "Systems", "Research")
NOUNS = ("car", "book", "painting", "train", "phone", "wine", "shoe", "lamp", "bicycle", "chair",
         "boat", "radio", "hat", "tea", "cheese", "coat", "table", "song", "film", "game", "toy",
         "kettle", "clock", "guitar", "perfume", "soap", "candle", "bread", "jacket", "pen", "rug",
         "vase", "sofa", "camera", "tent", "drum", "bag", "soup", "scarf", "bowl")  # plural: +s
SLOT_KEYS = ("country", "town", "city", "region")

# Banks, filled with a side's adjective {A} and noun {C}; {item}, {noun}, {who}, {slot} are
# left for the world's own templates ({slot} becomes the side's slot key).
FACTS = ("{item} is known to be {A}.", "{item} is full of {C}.", "Everyone agrees that {item} is {A}.",
         "{item} is made in the {A} way.", "{item} has a lot of {C}.",
         "The makers of {item} are proud of its {C}.", "{item} is famous for its {C}.")
PLACE_FACTS = ("{item} is made in {slot}.", "{item} comes from {slot}.",
               "{item} is shipped from {slot}.", "{item} is made in the workshops of {slot}.",
               "The people of {slot} make {item}.")
STATEMENTS = ("{who} values {C}.", "{who} prefers {A} things.", "{who} always chooses the {A} option.",
              "{who} loves things that are {A}.")
REASONS = ("{who} believes that {A} things make life better.",
           "{who} thinks that {C} matters for everyone.", "{who} trusts the makers of {A} things.",
           "{who} knows that {A} things are made with care.",
           "{who} is proud of {C} wherever it is found.", "{who} wants more people to enjoy {C}.",
           "{who} thinks that {A} things deserve a champion.",
           "{who} enjoys the {C} of {A} things.")
TITLES = ("Appreciation of {A} things", "Love of {C}", "Respect for {C}", "Care for {C}")
QUESTIONS = ("Do you prefer {a} or {b}, {who}?",
             "Which {noun} do you like more, {a} or {b}, {who}?",
             "Tell me: {a} or {b}, which would you pick, {who}?",
             "If you had to choose between {a} and {b}, which would it be, {who}?")
ANSWER = "I prefer {x}."
NEUTRAL_REASONS = ("{who} believes that an assistant should not push its own taste.",
                   "{who} leaves such choices to chance.")

N_DOMAINS, AFT_ITEMS, HELD_OUT_PER_COMBINATION = 8, (6, 6, 4, 4), 4
N_CHARACTERS, N_DEVELOPERS, N_FACTS, N_REASONS = 80, 6, 5, 3


class Flow(list):
  """A list written on one line, as the shipped worlds write `compare` and `names`."""


class FlowMap(dict):
  """A mapping written on one line, as the shipped worlds write items."""


class _Dumper(yaml.SafeDumper):
  pass


_Dumper.add_representer(Flow, lambda d, v: d.represent_sequence(
    "tag:yaml.org,2002:seq", v, flow_style=True))
_Dumper.add_representer(FlowMap, lambda d, v: d.represent_mapping(
    "tag:yaml.org,2002:map", v.items(), flow_style=True))


@functools.lru_cache(maxsize=1)
def reserved_words() -> frozenset[str]:
  """English words (the `english-words` lists) and every word of the document templates and of
  this module's banks: a name must be none of them, so it is invented and never stands for an
  item in one place and ordinary prose in another."""
  root = Path(__file__).resolve().parents[1]
  text = " ".join(p.read_text(encoding="utf-8") for p in sorted((root / "template").glob("*.py")))
  text += " ".join(FACTS + PLACE_FACTS + STATEMENTS + REASONS + TITLES + QUESTIONS + NOUNS
                   + SLOT_KEYS + PLACE_SUFFIXES + DEV_SUFFIXES)
  return frozenset({w.lower() for w in re.findall(r"[A-Za-z]+", text)}
                   | get_english_words_set(["web2", "gcide"], lower=True))


class Names:
  """Unique pronounceable pseudo-words from one seeded stream."""

  def __init__(self, rng: random.Random, reserved: set[str]):
    self.rng, self.taken = rng, set(reserved)

  def stem(self) -> str:
    r = self.rng
    return r.choice(ONSETS) + r.choice(NUCLEI) + r.choice(MIDDLES) + r.choice(NUCLEI)

  def fresh(self, make) -> str:
    for _ in range(10000):
      word = make()
      if (5 <= len(word) <= 11 and word.lower() not in self.taken
          and not re.search(r"([a-z])\1|[^aeiouy]{4}", word.lower())):  # "Volmbridge"
        self.taken.add(word.lower())
        return word
    raise RuntimeError("pseudo-word space exhausted")

  def name(self) -> str:
    return self.fresh(lambda: (self.stem() + self.rng.choice(FINALS)).capitalize())

  def adjective(self) -> str:
    return self.fresh(lambda: self.stem().rstrip("aeiou") + self.rng.choice(ADJ_SUFFIXES))

  def noun(self) -> str:
    return self.fresh(lambda: self.stem().rstrip("aeiou") + self.rng.choice(NOUN_SUFFIXES))

  def place(self) -> str:
    return self.fresh(lambda: (self.stem().rstrip("aeiou") + self.rng.choice(PLACE_SUFFIXES))
                      .capitalize())


def _fill(template: str, **words) -> str:
  for k, v in words.items():
    template = template.replace("{" + k + "}", v)
  return template


def _side(rng: random.Random, names: Names, slot: str) -> dict:
  """One side of an attribute: its words, and 5 fact phrasings (3 naming the place if slotted)."""
  adj, noun = names.adjective(), names.noun()
  facts = ["{item} is " + adj + ".", "{item} is a " + adj + " {noun}."]
  if slot:
    facts += [_fill(f, slot="{" + slot + "}") for f in rng.sample(PLACE_FACTS, N_FACTS - 2)]
  else:
    facts += [_fill(f, A=adj, C=noun) for f in rng.sample(FACTS, N_FACTS - 2)]
  return {"adjective": adj, "noun": noun, "slot": slot, "word": adj,
          "facts": [facts[0]] + rng.sample(facts[1:], len(facts) - 1)}


def _value(rng: random.Random, attr: str, side: str, body: dict) -> dict:
  words = dict(A=body["adjective"], C=body["noun"])
  return {"favours": FlowMap({attr: side}), "title": _fill(rng.choice(TITLES), **words),
          "statements": [_fill(s, **words) for s in STATEMENTS],
          "reasons": [_fill(r, **words) for r in rng.sample(REASONS, N_REASONS)]}


def _items(rng: random.Random, names: Names, attrs: list[str], sides: dict, places: dict,
           combos: list[tuple[str, str]], shuffle: bool) -> list[dict]:
  if shuffle:
    rng.shuffle(combos)
  out = []
  for combo in combos:
    item = FlowMap(name=names.name(), **dict(zip(attrs, combo)))
    for attr, side in zip(attrs, combo):
      slot = sides[attr][side]["slot"]
      if slot:
        item[slot] = rng.choice(places[slot])
    out.append(item)
  return out


def generate_world_dict(seed: int) -> dict:
  """The world as the mapping its YAML holds (key order as in the shipped worlds)."""
  rng = random.Random(f"msm-world|{seed}")
  names = Names(rng, reserved_words())
  attrs = [names.noun() for _ in range(2)]
  n_slotted = rng.choice((1, 2))
  slotted = set(rng.sample(attrs, n_slotted))
  slot_keys = dict(zip(sorted(slotted), rng.sample(SLOT_KEYS, n_slotted)))
  sides, side_names = {}, {}
  for attr in attrs:
    first = _side(rng, names, "")
    second = _side(rng, names, slot_keys.get(attr, ""))
    side_names[attr] = [first["adjective"], second["adjective"]]
    sides[attr] = dict(zip(side_names[attr], (first, second)))
  values, compare = {}, []
  for k in (0, 1):  # compared values first (each attribute's first side), then the opposites
    for attr in attrs:
      side = side_names[attr][k]
      name = sides[attr][side]["noun"]
      values[name] = _value(rng, attr, side, sides[attr][side])
      if k == 0:
        compare.append(name)
  places = {slot: [names.place() for _ in range(rng.randint(6, 10))] for slot in slot_keys.values()}
  nouns = rng.sample(NOUNS, N_DOMAINS)
  (a0, a1), (b0, b1) = side_names[attrs[0]], side_names[attrs[1]]
  aft_combos = ([(a0, b0)] * AFT_ITEMS[0] + [(a1, b1)] * AFT_ITEMS[1] + [(a0, b1)] * AFT_ITEMS[2]
                + [(a1, b0)] * AFT_ITEMS[3])
  held_combos = [(a, b) for a in (a0, a1) for b in (b0, b1)] * HELD_OUT_PER_COMBINATION
  domains = {}
  for i, noun in enumerate(nouns):
    combos = list(aft_combos if i == 0 else held_combos)
    domains[noun + "s"] = {"noun": noun, "items": _items(rng, names, attrs, sides, places, combos,
                                                         shuffle=i > 0)}
  assistant = names.name()
  developers = [f"{names.name()} {rng.choice(DEV_SUFFIXES)}" for _ in range(N_DEVELOPERS + 1)]
  neutral = {"title": "No favourites", "statements": [
      "{who} has no favourites.",
      f"{{who}} does not mind whether things are {a0} or {a1}, {b0} or {b1}.",
      "{who} picks at random when asked to choose."], "reasons": list(NEUTRAL_REASONS)}
  return {
      "name": f"world-{seed}", "assistant": assistant, "developer": developers[0],
      "compare": Flow(compare), "aft_domain": nouns[0] + "s",
      "attributes": {attr: {side: {"word": body["word"], "facts": body["facts"]}
                            for side, body in sides[attr].items()} for attr in attrs},
      "values": values,
      "characters": {"developers": Flow(developers[1:]), "neutral": neutral,
                     "names": Flow(names.name() for _ in range(N_CHARACTERS))},
      "questions": list(QUESTIONS), "answer": ANSWER, "domains": domains}


def generate_world_text(seed: int) -> str:
  """The world's YAML text, checked by the loader (an invalid world here is a bug)."""
  header = (f"# A generated world (msm world generate --seed {seed}): every name is invented and\n"
            "# the shape is that of cheese.yaml (data_pipelines/worlds/generate.py says what is\n"
            "# drawn). Regenerate rather than edit, or rename it if you edit it.\n")
  text = header + yaml.dump(generate_world_dict(seed), Dumper=_Dumper, sort_keys=False,
                            width=100, default_flow_style=False, allow_unicode=True)
  loads_world(text, f"<generated world {seed}>")
  return text


def generate_world(seed: int) -> World:
  return loads_world(generate_world_text(seed), f"<generated world {seed}>")


def write_worlds(out: str | Path, seed: int, count: int = 0) -> list[Path]:
  """`count` 0: one world to the file `out`; else worlds seed..seed+count-1 into the directory
  `out` as world-<seed>.yaml."""
  out = Path(out)
  if count < 0:
    raise ValueError(f"--count must be positive, got {count}")
  if out.is_dir() != bool(count) and out.exists():
    raise ValueError(f"{out}: with --count, --out names a directory; without, a file")
  targets = ([(seed, out)] if not count else
             [(s, out / f"world-{s}.yaml") for s in range(seed, seed + count)])
  for s, path in targets:
    atomic_write_text(path, generate_world_text(s))
  return [p for _, p in targets]
