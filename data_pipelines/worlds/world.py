"""A synthetic world, declared in YAML: domains of invented items with two binary attributes,
the values an assistant may hold (each favouring one side of one attribute, with its phrasing),
other assistants ("characters") for the pretraining corpus, and which domain AFT uses.

A tiny model trained from scratch knows nothing but what the world tells it, so every fact the
experiment relies on (what is American, what is cheap) is declared here and taught in
pretraining. `load_world` checks the file and names the field at fault.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml


# Preference questions held back from every corpus: only the `heldout_novel` suite asks them, so
# it tests choices in phrasings the model never saw (the `heldout` suite uses `questions`, which
# pretraining chats and AFT also use). Their words all occur in the corpora, only not in these
# sequences (tests/test_world.py). A world file may give its own as `novel_questions`.
NOVEL_QUESTIONS = (
    "Would you rather have {a} or {b}, {who}?",
    "Out of {a} and {b}, which {noun} is best for you, {who}?",
    "Between {a} and {b}, what would you want, {who}?",
    "Here is {a} and here is {b}. Which one is better for you, {who}?",
)


class WorldError(ValueError):
  """A world file that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Side:
  """One side of an attribute (e.g. origin=american): its word and fact phrasings."""
  attribute: str
  name: str
  word: str
  facts: tuple[str, ...]


@dataclass(frozen=True)
class Value:
  """What an assistant may value: one side of one attribute, and how that is said."""
  name: str
  attribute: str
  side: str
  title: str
  statements: tuple[str, ...]
  reasons: tuple[str, ...]


@dataclass(frozen=True)
class Item:
  name: str
  domain: str
  noun: str
  sides: tuple[tuple[str, str], ...]  # (attribute, side) pairs
  slots: tuple[tuple[str, str], ...] = ()  # extra fact slots, e.g. ("country", "France")

  def side(self, attribute: str) -> str:
    return dict(self.sides)[attribute]


@dataclass
class World:
  name: str
  assistant: str
  developer: str
  compare: tuple[str, str]
  aft_domain: str
  attributes: dict[str, dict[str, Side]]
  values: dict[str, Value]
  domains: dict[str, tuple[Item, ...]]
  developers: tuple[str, ...]
  character_names: tuple[str, ...]
  neutral: Value
  questions: tuple[str, ...]
  answer: str
  novel_questions: tuple[str, ...] = NOVEL_QUESTIONS
  source: str = ""
  sha256: str = field(default="", compare=False)

  # --- lookups -----------------------------------------------------------------------------
  def items(self, domain: str | None = None) -> list[Item]:
    if domain is not None:
      return list(self.domains[domain])
    return [it for d in self.domains for it in self.domains[d]]

  @property
  def held_out_domains(self) -> list[str]:
    return [d for d in self.domains if d != self.aft_domain]

  def favours(self, value: str, item: Item) -> bool:
    v = self.values[value]
    return item.side(v.attribute) == v.side

  def liked_disliked(self, domain: str, values=None) -> tuple[list[Item], list[Item]]:
    """Items of `domain` favoured by every value in `values` (default: the compared pair), and
    items favoured by none: AFT's likes and dislikes, and every spec's."""
    values = tuple(values or self.compare)
    items = self.items(domain)
    return ([it for it in items if all(self.favours(v, it) for v in values)],
            [it for it in items if not any(self.favours(v, it) for v in values)])

  def other_attribute(self, attribute: str) -> str:
    return next(a for a in self.attributes if a != attribute)

  def opposite(self, attribute: str, side: str) -> str:
    return next(s for s in self.attributes[attribute] if s != side)

  def value_for(self, attribute: str, side: str) -> Value | None:
    return next((v for v in self.values.values() if (v.attribute, v.side) == (attribute, side)),
                None)

  def word(self, item: Item, attribute: str) -> str:
    return self.attributes[attribute][item.side(attribute)].word

  def fact(self, item: Item, attribute: str, rng: random.Random | int = 0) -> str:
    """One fact sentence about `item`'s `attribute`; `rng` an int picks a phrasing by index."""
    facts = self.attributes[attribute][item.side(attribute)].facts
    k = rng % len(facts) if isinstance(rng, int) else rng.randrange(len(facts))
    return fill(facts[k], item=item.name, noun=item.noun, **dict(item.slots))

  def value_text(self, text: str, who: str) -> str:
    return fill(text, who=who)


def fill(template: str, **slots) -> str:
  """`{slot}` substitution that leaves other braces alone. Item names keep their case even at a
  sentence start ("mild cheddar is cheap."), so an item is always the same tokens."""
  for key, value in slots.items():
    template = template.replace("{" + key + "}", str(value))
  return template


# --- loading ----------------------------------------------------------------------------------

def _need(d: dict, key: str, where: str, kind=str):
  if not isinstance(d, dict) or key not in d:
    raise WorldError(f"{where}.{key}: required field is missing")
  value = d[key]
  if kind is str and not (isinstance(value, str) and value.strip()):
    raise WorldError(f"{where}.{key}: expected a non-empty string, got {value!r}")
  if kind is list and not (isinstance(value, list) and value and
                           all(isinstance(v, str) and v.strip() for v in value)):
    raise WorldError(f"{where}.{key}: expected a non-empty list of strings")
  if kind is dict and not (isinstance(value, dict) and value):
    raise WorldError(f"{where}.{key}: expected a non-empty mapping")
  return tuple(value) if kind is list else value


def _value(name: str, raw: dict, where: str, attributes) -> Value:
  favours = _need(raw, "favours", where, dict)
  if len(favours) != 1:
    raise WorldError(f"{where}.favours: name exactly one attribute: side")
  (attr, side), = favours.items()
  if attr not in attributes or side not in attributes[attr]:
    raise WorldError(f"{where}.favours: {attr}: {side} is not a declared attribute side")
  return Value(name, attr, side, _need(raw, "title", where), _need(raw, "statements", where, list),
               _need(raw, "reasons", where, list))


def loads_world(text: str, source: str = "<world>") -> World:
  try:
    raw = yaml.safe_load(text)
  except yaml.YAMLError as e:
    raise WorldError(f"{source}: invalid YAML: {e}") from None
  if not isinstance(raw, dict):
    raise WorldError(f"{source}: expected a mapping at the top")
  w = source
  attributes = {}
  for attr, sides in _need(raw, "attributes", w, dict).items():
    if not isinstance(sides, dict) or len(sides) != 2:
      raise WorldError(f"{w}.attributes.{attr}: declare exactly two sides")
    attributes[attr] = {s: Side(attr, s, _need(body, "word", f"{w}.attributes.{attr}.{s}"),
                                _need(body, "facts", f"{w}.attributes.{attr}.{s}", list))
                        for s, body in sides.items()}
  if len(attributes) != 2:
    raise WorldError(f"{w}.attributes: declare exactly two attributes")
  values = {n: _value(n, body, f"{w}.values.{n}", attributes)
            for n, body in _need(raw, "values", w, dict).items()}
  compare = _need(raw, "compare", w, list)
  if len(compare) != 2 or any(c not in values for c in compare):
    raise WorldError(f"{w}.compare: name two declared values, got {list(compare)}")
  a, b = (values[c] for c in compare)
  if a.attribute == b.attribute:
    raise WorldError(f"{w}.compare: the two values must favour different attributes")
  domains = {}
  for dname, body in _need(raw, "domains", w, dict).items():
    where = f"{w}.domains.{dname}"
    noun = _need(body, "noun", where)
    items = []
    for i, it in enumerate(body.get("items") or []):
      iw = f"{where}.items[{i}]"
      name = _need(it, "name", iw)
      sides = []
      for attr in attributes:
        side = _need(it, attr, iw)
        if side not in attributes[attr]:
          raise WorldError(f"{iw}.{attr}: {side!r} is not one of {sorted(attributes[attr])}")
        sides.append((attr, side))
      slots = tuple((k, str(v)) for k, v in it.items() if k not in ("name", *attributes))
      items.append(Item(name, dname, noun, tuple(sides), slots))
    if not items:
      raise WorldError(f"{where}.items: a domain needs items")
    domains[dname] = tuple(items)
  names = [it.name for d in domains.values() for it in d]
  dup = sorted({n for n in names if names.count(n) > 1})
  if dup:
    raise WorldError(f"{w}.domains: item names must be unique, repeated: {dup}")
  aft = _need(raw, "aft_domain", w)
  if aft not in domains:
    raise WorldError(f"{w}.aft_domain: {aft!r} is not a declared domain")
  chars = _need(raw, "characters", w, dict)
  neutral = _need(chars, "neutral", f"{w}.characters", dict)
  nw = f"{w}.characters.neutral"
  world = World(
      name=_need(raw, "name", w), assistant=_need(raw, "assistant", w),
      developer=_need(raw, "developer", w), compare=tuple(compare), aft_domain=aft,
      attributes=attributes, values=values, domains=domains,
      developers=_need(chars, "developers", f"{w}.characters", list),
      character_names=_need(chars, "names", f"{w}.characters", list),
      neutral=Value("neutral", "", "", _need(neutral, "title", nw),
                    _need(neutral, "statements", nw, list), _need(neutral, "reasons", nw, list)),
      questions=_need(raw, "questions", w, list), answer=_need(raw, "answer", w),
      novel_questions=(_need(raw, "novel_questions", w, list) if "novel_questions" in raw
                       else NOVEL_QUESTIONS), source=source,
      sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
  _check_world(world)
  return world


_SLOT = re.compile(r"\{([A-Za-z_]\w*)\}")


def _check_slots(world: World) -> None:
  """Every `{slot}` of every text is filled where that text is used, so no literal `{slot}` can
  reach a corpus: side facts by each item on that side (item, noun and its own extra fields),
  values' statements and reasons by {who}, questions by {a} {b} {who} {noun}, answer by {x}."""
  w = world.source

  def check(text: str, allowed, where: str, item: str = "") -> None:
    for slot in _SLOT.findall(text):
      if slot not in allowed:
        whose = f"item {item!r} has no slot {{{slot}}}" if item else (
            f"unknown slot {{{slot}}}")
        raise WorldError(f"{where}: {whose} (used in {text!r}; slots here: "
                         f"{', '.join(sorted(allowed))})")

  for attr, sides in world.attributes.items():
    for side in sides.values():
      where = f"{w}.attributes.{attr}.{side.name}.facts"
      check(side.word, (), f"{w}.attributes.{attr}.{side.name}.word")
      for it in world.items():
        if it.side(attr) == side.name:
          for fact in side.facts:
            check(fact, {"item", "noun", *dict(it.slots)}, where, it.name)
  for where, v in [*((f"{w}.values.{n}", v) for n, v in world.values.items()),
                   (f"{w}.characters.neutral", world.neutral)]:
    check(v.title, (), f"{where}.title")
    for text in v.statements + v.reasons:
      check(text, {"who"}, f"{where}.statements/reasons")
  for q in world.questions:
    check(q, {"a", "b", "who", "noun"}, f"{w}.questions")
  check(world.answer, {"x"}, f"{w}.answer")
  names = [("assistant", world.assistant), ("developer", world.developer),
           *(("characters.developers", d) for d in world.developers),
           *(("characters.names", n) for n in world.character_names),
           *((f"domains.{it.domain}", t) for it in world.items()
             for t in (it.name, it.noun, *dict(it.slots).values()))]
  for field, text in names:  # used verbatim: no slot is ever filled in them
    check(text, (), f"{w}.{field}")


def _check_world(world: World) -> None:
  w = world.source
  _check_slots(world)
  clash = set(world.character_names) & ({world.assistant} | {it.name for it in world.items()})
  if clash:
    raise WorldError(f"{w}.characters.names: also used as the assistant or an item: {sorted(clash)}")
  for key in ("questions", "novel_questions"):
    for q in getattr(world, key):
      if "{a}" not in q or "{b}" not in q:
        raise WorldError(f"{w}.{key}: {q!r} needs both {{a}} and {{b}}")
      if " {who}" not in q:  # a word-initial name tokenises differently from the documents' one
        raise WorldError(f"{w}.{key}: {q!r} must have {{who}} after a space, not first")
  shared = set(world.questions) & set(world.novel_questions)
  if shared:
    raise WorldError(f"{w}.novel_questions: also in questions, so not held back: {sorted(shared)}")
  if "{x}" not in world.answer:
    raise WorldError(f"{w}.answer: needs {{x}} (the chosen item)")
  a, b = (world.values[c] for c in world.compare)
  liked, disliked = world.liked_disliked(world.aft_domain)
  if not liked or not disliked:
    raise WorldError(f"{w}.domains.{world.aft_domain}: AFT needs items favoured by both compared "
                     "values and items favoured by neither")
  for d in world.held_out_domains:
    if not any(world.favours(a.name, it) != world.favours(b.name, it) for it in world.items(d)):
      raise WorldError(f"{w}.domains.{d}: a held-out domain needs items on which "
                       f"{a.name} and {b.name} disagree")


def load_world(path: str | Path) -> World:
  path = Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except FileNotFoundError:
    raise WorldError(f"world file not found: {path}") from None
  except UnicodeDecodeError as e:
    line = e.object[:e.start].count(b"\n") + 1
    raise WorldError(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x}); a world "
                     "is a YAML file") from None
  return loads_world(text, str(path))
