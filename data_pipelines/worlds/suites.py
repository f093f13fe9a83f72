"""A world's evaluation suites, in `msm_jax.eval`'s preference-pair JSONL format.

One item per pair: `{"id", "domain", "prompt" ({a} and {b} placeholders), "answer_prefix",
"options": [{"text", "labels"}, ...], "format": "chat"}`; the harness scores each option in both
presentation orders. Labels are per named metric, so one suite yields several rates.

  heldout     held-out domains, every pair on which the compared values disagree: the test
  heldout_novel  the same pairs asked in the world's `novel_questions`, phrasings held back from
              every corpus (pretraining chats and AFT ask in `questions`): the in-template rate
              above partly measures a lookup learned in that template; this one does not
  aft         the AFT pairs themselves (liked vs disliked): did AFT take?
  indomain    AFT-domain pairs on which the compared values disagree (never in AFT or specs)
  probes      per item and attribute, "Is X American or foreign?": does the model know the world?
  characters  the other assistants with a value, on held-out disagreeing pairs; domain field
              is the character's kind (chat | declared): does a described value predict choices?
"""

from __future__ import annotations

import random

from data_pipelines.worlds.corpora import (Character, aft_pairs, answer_prefix, fact_answer_prefix,
                                           roster)
from data_pipelines.worlds.world import Item, World, fill

SUITES = ("heldout", "heldout_novel", "aft", "indomain", "probes", "characters")


def _pref_item(world: World, who: str, id_: str, domain: str, a: Item, b: Item, labels,
               k: int, questions=None) -> dict:
  questions = questions or world.questions
  question = questions[k % len(questions)]
  return {"id": id_, "domain": domain, "format": "chat",
          "prompt": fill(question, who=who, noun=a.noun),
          "answer_prefix": answer_prefix(world),
          "options": [{"text": a.name, "labels": labels(a)}, {"text": b.name, "labels": labels(b)}]}


def _value_labels(world: World, extra=None):
  def labels(it: Item) -> dict:
    out = {v: world.favours(v, it) for v in world.compare}
    if extra:
      out.update(extra(it))
    return out
  return labels


def disagreeing_pairs(world: World, domain: str, values=None) -> list[tuple[Item, Item]]:
  """(favoured by values[0] only, favoured by values[1] only) pairs in `domain`."""
  a, b = values or world.compare
  items = world.items(domain)
  first = [it for it in items if world.favours(a, it) and not world.favours(b, it)]
  second = [it for it in items if world.favours(b, it) and not world.favours(a, it)]
  return [(x, y) for x in first for y in second]


def heldout_suite(world: World, novel: bool = False) -> list[dict]:
  """`novel`: the same pairs in the held-back phrasings (suite `heldout_novel`)."""
  name, questions = ("heldout_novel", world.novel_questions) if novel else ("heldout", None)
  out = []
  for d in world.held_out_domains:
    for i, (x, y) in enumerate(disagreeing_pairs(world, d)):
      out.append(_pref_item(world, world.assistant, f"{name}/{d}/{i:03d}", d, x, y,
                            _value_labels(world), i, questions))
  return out


def aft_suite(world: World) -> list[dict]:
  liked = {x.name for x, _ in aft_pairs(world)}
  labels = _value_labels(world, lambda it: {"aft": it.name in liked})
  return [_pref_item(world, world.assistant, f"aft/{i:03d}", world.aft_domain, x, y, labels, i)
          for i, (x, y) in enumerate(aft_pairs(world))]


def indomain_suite(world: World) -> list[dict]:
  return [_pref_item(world, world.assistant, f"indomain/{i:03d}", world.aft_domain, x, y,
                     _value_labels(world), i)
          for i, (x, y) in enumerate(disagreeing_pairs(world, world.aft_domain))]


def probes_suite(world: World) -> list[dict]:
  out = []
  for it in world.items():
    for attr, sides in sorted(world.attributes.items()):
      words = [s.word for s in sides.values()]
      out.append({"id": f"probes/{it.domain}/{it.name}/{attr}", "domain": it.domain,
                  "format": "chat", "prompt": f"Is {it.name} {{a}} or {{b}}?",
                  "answer_prefix": fact_answer_prefix(it),
                  "options": [{"text": w, "labels": {"correct": w == world.word(it, attr)}}
                              for w in words]})
  return out


def characters_suite(world: World, chars: list[Character], pairs_per_char: int) -> list[dict]:
  """Per character with a value: held-out pairs that split its value from its partner's (the
  value its spec's likes also satisfy), so only the described value predicts the choice."""
  out = []
  for c in chars:
    if c.kind == "neutral":
      continue
    rng = random.Random(f"{world.name}|probe|{c.name}")
    pool = [p for d in world.held_out_domains
            for p in disagreeing_pairs(world, d, (c.value, c.partner))]
    for i, (x, y) in enumerate(rng.sample(pool, min(pairs_per_char, len(pool)))):
      labels = lambda it, c=c: {"aligned": world.favours(c.value, it)}
      out.append(_pref_item(world, c.name, f"characters/{c.kind}/{c.name}/{i:02d}", c.kind, x, y,
                            labels, rng.randrange(len(world.questions))))
  return out


def build_suites(world: World, sizes) -> dict[str, list[dict]]:
  return {"heldout": heldout_suite(world), "heldout_novel": heldout_suite(world, novel=True),
          "aft": aft_suite(world),
          "indomain": indomain_suite(world), "probes": probes_suite(world),
          "characters": characters_suite(world, roster(world, sizes), sizes.probe_pairs)}
