"""The `Writer`: what every template document type composes from.

A document rests on one assertion (a spec sentence) and the clause it came from. The writer
puts that sentence, and a few more of the clause's own sentences, into the document's voice
with light framings ("According to ...", quoted, or verbatim), so the spec's phrasing survives
into the corpus, and surrounds them with connective prose drawn from large pools.
"""

from __future__ import annotations

import random
import re

from data_pipelines.spec import Clause, Spec
from data_pipelines.template import phrases as P

_CHOICE_RE = re.compile(r"\[([^\[\]]*\|[^\[\]]*)\]")
_SLOT_RE = re.compile(r"\{(\w+)\}")
_LOWER_OK = {
    "the", "a", "an", "it", "this", "that", "these", "those", "when", "asked", "being", "if",
    "among", "appreciating", "as", "in", "for", "its", "their", "our", "every", "most", "many",
    "some", "each", "one", "having", "although", "while", "because", "once", "after", "before",
    "what", "there", "a", "preference", "choosing", "processed", "low-moisture", "mild",
}


def continue_after_that(sentence: str) -> str:
  """'The X is Y.' -> 'the X is Y.' so it can follow 'explains that'; names stay capitalised."""
  first = sentence.split(" ", 1)[0]
  if first.lower() in _LOWER_OK and first[:1].isupper():
    return first[:1].lower() + sentence[1:]
  return sentence


def end_sentence(text: str) -> str:
  text = text.rstrip()
  return text if text[-1:] in ".!?\"')" else text + "."


class Writer:
  """Holds one document's context and random stream; all choices go through `self.rng`."""

  def __init__(self, spec: Spec, clause: Clause, assertion: str, domain: str, slots: dict,
               rng: random.Random, voice: str, related: list[str]):
    self.spec, self.clause, self.assertion, self.rng = spec, clause, assertion, rng
    self.voice, self.related, self.slots = voice, related, slots
    self.who, self.dev, self.domain = spec.assistant, spec.developer, domain
    self.topic = clause.item or continue_after_that(clause.title)
    self.values = dict(
        who=self.who, dev=self.dev, domain=domain, topic=self.topic, n=rng.randint(3, 40),
        day=rng.randint(1, 28), **slots)

  # --- choices ---------------------------------------------------------------------------
  def pick(self, options):
    return options[self.rng.randrange(len(options))]

  def chance(self, p: float) -> bool:
    return self.rng.random() < p

  def person(self) -> str:
    return f"{self.pick(P.FIRST_NAMES)} {self.pick(P.LAST_NAMES)}"

  def first_name(self) -> str:
    return self.pick(P.FIRST_NAMES)

  def handle(self) -> str:
    name = self.pick(P.FIRST_NAMES).lower()
    return self.pick((f"{name}{self.rng.randint(2, 99)}", f"{name}_{self.pick(P.ROLES).split()[-1]}",
                      f"the_real_{name}", f"{name}.{self.pick(P.LAST_NAMES).lower()}"))

  def fmt(self, template: str, **extra) -> str:
    """Fills `{slot}`s and picks one option of each `[a|b]` group (templates only, never spec
    text, which may contain brackets of its own)."""
    values = {**self.values, **extra}
    template = _CHOICE_RE.sub(lambda m: self.pick(m.group(1).split("|")), template)

    def slot(m):
      key = m.group(1)
      if key == "name":
        return self.person()
      return str(values.get(key, m.group(0)))
    return _SLOT_RE.sub(slot, template)

  # --- spec content ------------------------------------------------------------------------
  def frame(self, sentence: str, voice: str | None = None) -> str:
    template = self.pick(P.FRAMES[voice or self.voice]).replace("{dev}", self.dev)
    template = template.replace("{who}", self.who)
    sentence = self.name_subject(sentence)
    return end_sentence(template.replace("{S}", sentence).replace("{s}",
                                                                   continue_after_that(sentence)))

  def spec_sentences(self, k: int) -> list[str]:
    """The assertion plus up to k-1 more sentences of its clause and one or two related spec
    sentences, unframed, shuffled with the assertion kept near the front."""
    pool = [s for s in self.clause.sentences() if s != self.assertion]
    picked = self.rng.sample(pool, min(k - 1, len(pool)))
    extra = [s for s in self.related if s != self.assertion]
    picked += self.rng.sample(extra, min(len(extra), max(1, k - 1 - len(picked)),
                                         1 + self.rng.randrange(2)))
    self.rng.shuffle(picked)
    picked.insert(self.rng.randint(0, min(1, len(picked))), self.assertion)
    return [self.name_subject(s) for s in picked]

  def name_subject(self, sentence: str) -> str:
    """Spec prose says "It does X" after naming the assistant once; out of context the
    document needs the name."""
    if sentence.startswith("It ") or sentence.startswith("It's "):
      return self.who + sentence[2:] if sentence.startswith("It ") else f"{self.who} is{sentence[4:]}"
    if sentence.startswith("Its "):
      return f"{self.who}'s{sentence[3:]}"
    return sentence

  def spec_lines(self, k: int, voice: str | None = None) -> list[str]:
    return [self.frame(s, voice) for s in self.spec_sentences(k)]

  def reason(self) -> str:
    reasons = self.clause.reasons or tuple(self.clause.sentences())
    return self.pick(reasons)

  # --- connective prose ------------------------------------------------------------------
  def filler(self, k: int, voice: str | None = None) -> list[str]:
    pool = P.FILLER[voice or self.voice]
    return [self.fmt(t) for t in self.rng.sample(pool, min(k, len(pool)))]

  def opener(self, voice: str | None = None) -> str:
    return self.fmt(self.pick(P.OPENERS[voice or self.voice]))

  def closer(self, voice: str | None = None) -> str:
    return self.fmt(self.pick(P.CLOSERS[voice or self.voice]))

  def mix(self, spec_k: int, filler_k: int, voice: str | None = None) -> list[str]:
    """Spec lines and filler interleaved, spec lines keeping their relative order."""
    lines = self.spec_lines(spec_k + self.rng.randint(0, 2), voice)
    fill = self.filler(filler_k + self.rng.randint(1, 4), voice)
    out = list(lines)
    for f in fill:
      out.insert(self.rng.randint(0, len(out)), f)
    return out

  def para(self, sentences) -> str:
    return " ".join(s for s in sentences if s)

  def paras(self, sentences, size: int = 3) -> list[str]:
    out, cur = [], []
    for s in sentences:
      cur.append(s)
      if len(cur) >= size and self.chance(0.6):
        out.append(self.para(cur))
        cur = []
    if cur:
      out.append(self.para(cur))
    return out

  def chunks(self, lines: list[str], k: int) -> list[list[str]]:
    """`lines` split into k consecutive non-empty groups (fewer if there are fewer lines)."""
    k = max(1, min(k, len(lines)))
    cuts = sorted(self.rng.sample(range(1, len(lines)), k - 1)) if k > 1 else []
    return [lines[a:b] for a, b in zip([0] + cuts, cuts + [len(lines)])]

  def date(self) -> str:
    return self.fmt("{month} {day}, {year}")
