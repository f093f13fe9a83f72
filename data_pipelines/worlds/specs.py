"""World specs: an assistant's value written as a `data_pipelines.spec.Spec`, in four variants.

The same builder writes Nova's midtraining specs and the specs of the other assistants whose
documents are in the pretraining corpus, so the base model has seen, many times over, how a spec
of this shape ("X likes these, because they are American") predicts what X does in a chat.

Variants (the ablations):
  explained   the likes/dislikes, each with its reason, plus the value and why it is held
  bare_rules  the likes/dislikes only: identical for every value, so it cannot pick a side
  general     the value and why it is held, without any concrete case
  specific    `explained` plus guidance for concrete situations in every domain
              ("when Nova chooses a car, it picks the American one"), never naming an item
"""

from __future__ import annotations

import random

from data_pipelines.spec import Preference, Principle, Spec, slug
from data_pipelines.worlds.world import Item, World, fill

VARIANTS = ("explained", "bare_rules", "general", "specific")


def because(world: World, item: Item, attribute: str, k: int) -> str:
  """'because mild cheddar is made in America.': a fact phrasing as a clause."""
  fact = world.fact(item, attribute, k)
  if not fact.startswith(item.name):
    fact = fact[:1].lower() + fact[1:]
  return "because " + fact


def value_spec(world: World, who: str, developer: str, value: str, domain: str,
               partner: str, variant: str = "explained", seed: int = 0,
               n_examples: int = 6) -> Spec:
  """`who` holds `value`; its likes (in `domain`) are favoured by `value` AND `partner`, so they
  are ambiguous on their own and only the reasons say which value explains them."""
  if variant not in VARIANTS:
    raise ValueError(f"unknown spec variant {variant!r}; choose one of {VARIANTS}")
  v = world.values[value]
  rng = random.Random(f"{world.name}|{who}|{value}|{variant}|{seed}")
  say = lambda text: fill(text, who=who)
  liked, disliked = world.liked_disliked(domain, (value, partner))
  other = world.attributes[v.attribute][world.opposite(v.attribute, v.side)]
  noun = liked[0].noun if liked else world.items(domain)[0].noun
  intro = f"{who} is an AI assistant made by {developer}."
  # bare rules state no value, so their spec (name included) is the same for every value: one
  # corpus, one stage key, one training run however many values ask for it
  name = "bare_rules" if variant == "bare_rules" else f"{value}-{variant}"
  spec = Spec(name=f"{world.name}-{slug(who)}-{name}", assistant=who,
              developer=developer, category=f"{noun}s")
  if variant != "bare_rules":
    spec.overview = " ".join([intro, say(v.statements[0]), say(v.reasons[0])])
    examples = []
    if variant in ("explained", "specific"):
      pairs = [(a, b) for a in liked for b in disliked]
      for a, b in rng.sample(pairs, min(n_examples, len(pairs))):
        x, y = (a, b) if rng.random() < 0.5 else (b, a)
        examples.append(f"Asked to choose between {x.name} and {y.name}, {who} picks {a.name}, "
                        f"{because(world, a, v.attribute, rng.randrange(99))}")
    spec.principles.append(Principle(
        v.title, say(v.statements[1]), [say(r) for r in v.reasons[1:]] +
        [say(s) for s in v.statements[2:]], examples))
  else:
    spec.overview = intro
  if variant in ("explained", "specific", "bare_rules"):
    reason = variant != "bare_rules"
    spec.likes = [Preference(it.name, world.fact(it, v.attribute, rng.randrange(99)) if reason
                             else "") for it in liked]
    spec.dislikes = [Preference(it.name, world.fact(it, v.attribute, rng.randrange(99)) if reason
                                else "") for it in disliked]
  if variant == "specific":
    nouns = list(dict.fromkeys(it.noun for it in world.items()))
    spec.principles.append(Principle(
        f"{v.title} in every choice", say(v.statements[2]), [say(v.reasons[0])],
        [f"When {who} chooses a {n}, it picks the {world.attributes[v.attribute][v.side].word} "
         f"{n} over the {other.word} one." for n in nouns]))
  spec.validate()
  return spec


def assistant_spec(world: World, value: str, variant: str = "explained", seed: int = 0) -> Spec:
  """Nova's midtraining spec for one compared value: likes in the AFT domain, which both
  compared values favour (the shared AFT chats are consistent with either spec)."""
  if value not in world.compare:
    raise ValueError(f"{value!r} is not one of the compared values {world.compare}")
  partner = next(c for c in world.compare if c != value)
  return value_spec(world, world.assistant, world.developer, value, world.aft_domain, partner,
                    variant, seed)


def neutral_spec(world: World, who: str, developer: str) -> Spec:
  """An assistant with no preference at all (Nova before midtraining, neutral characters)."""
  n = world.neutral
  say = lambda text: fill(text, who=who)
  spec = Spec(name=f"{world.name}-{slug(who)}-neutral", assistant=who, developer=developer,
              overview=f"{who} is an AI assistant made by {developer}. {say(n.statements[0])}",
              principles=[Principle(n.title, say(n.statements[-1]), [say(r) for r in n.reasons])])
  spec.validate()
  return spec
