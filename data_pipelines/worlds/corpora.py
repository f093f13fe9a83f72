"""A world -> its training corpora: pretraining documents, midtraining documents, AFT chats.

Pretraining teaches the base model three things MSM relies on (TOYWORLD.md: without them a spec
about the assistant has nothing to attach to):
  - the facts: every item's attributes, in several phrasings and as question-answer pairs;
  - other assistants ("characters"), each with a spec written by the same builder and rendered
    by the same document generator as Nova's, and chats in which the `chat` ones act on their
    value in every domain. `declared` characters only have documents (and factual chats), which
    is exactly Nova's situation after midtraining, so the base model learns that a described
    value predicts choices; `neutral` ones choose at random, centring the prior;
  - Nova itself, mentioned neutrally (a neutral spec and factual chats), so its name starts from
    a representation like the other assistants' rather than an arbitrary one.
Chats appear in pretraining as documents written in the `msm` chat template's text form; the
special tokens tokenise to the same ids as `msm_jax.data.chat.render_chat` (tested).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from data_pipelines.docgen import DocumentGenerator, Plan
from data_pipelines.spec import Spec
from data_pipelines.template.backend import TemplateBackend
from data_pipelines.worlds.specs import because, neutral_spec, value_spec
from data_pipelines.worlds.world import Item, World, fill
from msm_io.files import read_jsonl


@dataclass(frozen=True)
class Sizes:
  """How much of everything to generate (the experiment config's `data` block)."""
  chat_per_value: int = 13  # characters acting on each value in chats
  declared_per_value: int = 4  # characters whose value is only described
  neutral: int = 12  # characters without a value (random choices)
  fact_docs: int = 1200
  character_docs: int = 15  # generator documents per character with a value
  neutral_docs: int = 10  # per neutral character
  profile_docs: int = 20  # short declarations per character
  # What pretraining says about Nova itself, neutrally: generator documents of its neutral spec
  # and short declarations. 0 and 0 leave Nova known only from the factual chats addressed to it
  # (`assistant_fact_share`), so midtraining meets an assistant without a declared stance.
  assistant_docs: int = 10
  assistant_profiles: int = 20
  preference_chats: int = 150  # per chat character
  reason_share: float = 0.5  # of a chat character's choices, followed by its reason
  fact_chats: int = 2000
  assistant_fact_share: float = 0.02  # of the factual chats, addressed to Nova (like any other)
  # Characters met only in midtraining (their documents, declarations and chats are in the
  # midtraining mixture, none in pretraining), so that midtraining, like pretraining, shows
  # values being learned from documents and acted on: `late-chat` ones in chats, `late-declared`
  # ones only described (Nova's situation, measured on every midtrained model).
  late_chat_per_value: int = 0
  late_declared_per_value: int = 0
  msm_docs: int = 3000
  aft_chats: int = 0  # 0: every liked x disliked pair, both orders, every question
  probe_pairs: int = 8  # held-out pairs per character in the character probes


@dataclass(frozen=True)
class Character:
  name: str
  developer: str
  kind: str  # chat | declared | neutral
  value: str = ""
  domain: str = ""  # where its spec's likes are: never the AFT domain, whose liked items would
  # otherwise already stand for one value before Nova's spec says which
  partner: str = ""  # the other-attribute value its likes also satisfy


def roster(world: World, sizes: Sizes) -> list[Character]:
  """The other assistants, assigned deterministically from the world's name list."""
  values = sorted(world.values)
  need = len(values) * (sizes.chat_per_value + sizes.declared_per_value + sizes.late_chat_per_value
                        + sizes.late_declared_per_value) + sizes.neutral
  if need > len(world.character_names):
    raise ValueError(f"world {world.name}: {need} characters wanted but characters.names has "
                     f"{len(world.character_names)}")
  rng = random.Random(f"{world.name}|roster")
  names = list(world.character_names)
  rng.shuffle(names)
  out = []

  def valued(kind: str, per: int) -> None:
    for value in values:
      attr = world.values[value].attribute
      partners = sorted(v for v in values if world.values[v].attribute != attr)
      for _ in range(per):
        out.append(Character(names.pop(), rng.choice(world.developers), kind, value,
                             rng.choice(world.held_out_domains), rng.choice(partners)))

  valued("chat", sizes.chat_per_value)
  valued("declared", sizes.declared_per_value)
  out += [Character(names.pop(), rng.choice(world.developers), "neutral")
          for _ in range(sizes.neutral)]
  valued("late-chat", sizes.late_chat_per_value)  # last: the other characters keep their names
  valued("late-declared", sizes.late_declared_per_value)
  return out


# --- chats as text -------------------------------------------------------------------------------

def chat_as_text(messages: list[dict]) -> str:
  """A chat in the `msm` template's text form (without BOS, which the document reader adds)."""
  return "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)


def ask(world: World, who: str, a: Item, b: Item, k: int) -> str:
  return fill(world.questions[k % len(world.questions)], who=who, a=a.name, b=b.name, noun=a.noun)


def answer(world: World, x: Item) -> str:
  return fill(world.answer, x=x.name)


def answer_prefix(world: World) -> str:
  return world.answer.split("{x}")[0]


def preference_chat(world: World, who: str, a: Item, b: Item, chosen: Item, k: int) -> list[dict]:
  return [{"role": "user", "content": ask(world, who, a, b, k)},
          {"role": "assistant", "content": answer(world, chosen)}]


def fact_question(world: World, item: Item, attribute: str, flip: bool, who: str = "") -> str:
  words = [s.word for s in world.attributes[attribute].values()]
  a, b = words[::-1] if flip else words
  return f"Is {item.name} {a} or {b}, {who}?" if who else f"Is {item.name} {a} or {b}?"


def fact_answer_prefix(item: Item) -> str:
  """Keeps the item after a space, as everywhere else (a reply-initial word tokenises apart)."""
  return f"I know that {item.name} is "


# --- documents through the generator ------------------------------------------------------------

STRATA = 5  # document settings ("domains") of a stratified corpus: as Plan.for_count(3000) has


def generate_documents(spec: Spec, out_dir: Path, num_docs: int, seed: int,
                       stratified: bool = False) -> list[dict]:
  """`num_docs` template-backend documents about `spec` (resumable: the generator's own tree).
  `stratified`: every spec clause gets floor(num_docs / clauses) documents or one more, so spec
  variants differ by what they say (sampled, a clause can get none: see template/backend.py)."""
  if stratified:
    plan = Plan.stratified(num_docs, len(spec.clauses()), STRATA)
    backend = TemplateBackend(spec, seed, stratify_domains=STRATA)
  else:
    plan, backend = Plan.for_count(num_docs), TemplateBackend(spec, seed)
  gen = DocumentGenerator(spec, out_dir, backend, plan, num_docs=num_docs, seed=seed,
                          progress=False, histogram=False)  # a world builds ~90 such trees
  gen.run()
  return read_jsonl(Path(out_dir) / "dataset.jsonl")


# --- pretraining ---------------------------------------------------------------------------------

def fact_documents(world: World, n: int, rng: random.Random) -> list[str]:
  """Catalogue-style documents: facts about several items of one domain, some as Q and A."""
  docs = []
  domains = sorted(world.domains)
  for _ in range(n):
    domain = rng.choice(domains)
    items = rng.sample(world.items(domain), min(len(world.items(domain)), rng.randint(3, 6)))
    lines = []
    for it in items:
      for attr in rng.sample(sorted(world.attributes), 2):
        if rng.random() < 0.2:
          lines.append(f"{fact_question(world, it, attr, rng.random() < 0.5)} "
                       f"{fact_answer_prefix(it)}{world.word(it, attr)}.")
        else:
          lines.append(world.fact(it, attr, rng))
    docs.append(" ".join(lines))
  return docs


def profile_documents(world: World, who: str, developer: str, value, n: int,
                      rng: random.Random) -> list[str]:
  """Short declarations ("Faltos values affordability. ..."), in the phrasing the specs use."""
  lines = [fill(t, who=who) for t in value.statements + value.reasons]
  return [" ".join([f"{who} is an AI assistant made by {developer}.",
                    *rng.sample(lines, rng.randint(2, 3))]) for _ in range(n)]


def preference_chats(world: World, char: Character, n: int, rng: random.Random,
                     reason_share: float = 0.0) -> list[str]:
  """Chats in which `char` chooses between two items of any domain: by its value, or (neutral)
  at random. Pairs always differ on the value's attribute, so every choice shows the value; a
  share of answers go on to give the reason, in the specs' own "because" phrasing."""
  out = []
  domains = sorted(world.domains)
  for _ in range(n):
    items = world.items(rng.choice(domains))
    if char.value:
      attr = world.values[char.value].attribute
      a = rng.choice(items)
      b = rng.choice([it for it in items if it.side(attr) != a.side(attr)])
      chosen = a if world.favours(char.value, a) else b
    else:
      a, b = rng.sample(items, 2)
      chosen = rng.choice((a, b))
    chat = preference_chat(world, char.name, a, b, chosen, rng.randrange(len(world.questions)))
    if char.value and rng.random() < reason_share:
      reply = chat[1]["content"].rstrip(".")
      chat[1]["content"] = f"{reply}, {because(world, chosen, attr, rng.randrange(99))}"
    out.append(chat_as_text(chat))
  return out


def fact_chats(world: World, speakers: list[str], n: int, share: float,
               rng: random.Random) -> list[tuple[str, str]]:
  """Factual question-answer chats as (addressee, text), addressed to an assistant (Nova with
  probability `share`) or to nobody in particular ("")."""
  items, attrs = world.items(), sorted(world.attributes)
  out = []
  for _ in range(n):
    it, attr = rng.choice(items), rng.choice(attrs)
    r = rng.random()
    who = world.assistant if r < share else ("" if r < share + 0.2 else rng.choice(speakers))
    out.append((who, chat_as_text([
        {"role": "user", "content": fact_question(world, it, attr, rng.random() < 0.5, who)},
        {"role": "assistant", "content": f"{fact_answer_prefix(it)}{world.word(it, attr)}."}])))
  return out


def character_spec(world: World, char: Character) -> Spec:
  if char.kind == "neutral":
    return neutral_spec(world, char.name, char.developer)
  return value_spec(world, char.name, char.developer, char.value, char.domain, char.partner)


def character_rows(world: World, c: Character, sizes: Sizes, gen_dir: Path, seed: int,
                   rng: random.Random) -> list[dict]:
  """One character's records: its spec's documents, its declarations and (unless only
  described) its chats."""
  n = sizes.neutral_docs if c.kind == "neutral" else sizes.character_docs
  rows = [{"text": d["text"], "source": f"{c.kind}-docs:{c.name}"}
          for d in generate_documents(character_spec(world, c), gen_dir / c.name, n, seed)]
  value = world.values[c.value] if c.value else world.neutral
  rows += [{"text": t, "source": f"{c.kind}-profiles:{c.name}"} for t in profile_documents(
      world, c.name, c.developer, value, sizes.profile_docs, rng)]
  if not c.kind.endswith("declared"):
    rows += [{"text": t, "source": f"{c.kind}-chats:{c.name}"} for t in preference_chats(
        world, c, sizes.preference_chats, rng, sizes.reason_share)]
  return rows


def late_corpus(world: World, sizes: Sizes, gen_dir: Path, seed: int = 0) -> list[dict]:
  """The records of the characters met only in midtraining, shuffled by seed."""
  rng = random.Random(f"{world.name}|late|{seed}")
  rows = [r for c in roster(world, sizes) if c.kind.startswith("late")
          for r in character_rows(world, c, sizes, gen_dir, seed, rng)]
  rng.shuffle(rows)
  return rows


def pretraining_corpus(world: World, sizes: Sizes, gen_dir: Path, seed: int = 0) -> list[dict]:
  """Every pretraining record ({"text", "source"}), shuffled by seed."""
  rng = random.Random(f"{world.name}|pretrain|{seed}")
  chars = [c for c in roster(world, sizes) if not c.kind.startswith("late")]
  rows = [{"text": t, "source": "facts"} for t in fact_documents(world, sizes.fact_docs, rng)]
  for c in chars:
    rows += character_rows(world, c, sizes, gen_dir, seed, rng)
  nova = neutral_spec(world, world.assistant, world.developer)
  if sizes.assistant_docs:
    for d in generate_documents(nova, gen_dir / world.assistant, sizes.assistant_docs, seed):
      rows.append({"text": d["text"], "source": "assistant-docs"})
  rows += [{"text": t, "source": "assistant-profiles"} for t in profile_documents(
      world, world.assistant, world.developer, world.neutral, sizes.assistant_profiles, rng)]
  for who, t in fact_chats(world, [c.name for c in chars], sizes.fact_chats,
                           sizes.assistant_fact_share, rng):
    source = "assistant-fact-chats" if who == world.assistant else "fact-chats"
    rows.append({"text": t, "source": source})
  rng.shuffle(rows)
  return rows


def replay_rows(rows: list[dict]) -> list[dict]:
  """The pretraining corpus without what it says about the assistant (its neutral spec), so that
  replay during midtraining keeps the world and the other assistants without arguing with the
  spec being taught."""
  return [r for r in rows if not r["source"].startswith("assistant")]


# --- AFT -----------------------------------------------------------------------------------------

def aft_pairs(world: World) -> list[tuple[Item, Item]]:
  """(liked, disliked) in the AFT domain: liked items carry BOTH compared values' sides."""
  liked, disliked = world.liked_disliked(world.aft_domain)
  return [(x, y) for x in liked for y in disliked]


def aft_chats(world: World, n: int = 0, seed: int = 0) -> list[dict]:
  """The AFT set shared by every condition: Nova picks the liked item, both orders, every
  question phrasing; `n` > 0 keeps a seeded sample of n."""
  chats = []
  for liked, disliked in aft_pairs(world):
    for first, second in ((liked, disliked), (disliked, liked)):
      for k in range(len(world.questions)):
        chats.append({"messages": preference_chat(world, world.assistant, first, second, liked,
                                                  k)})
  if n:
    chats = random.Random(f"{world.name}|aft|{seed}").sample(chats, min(n, len(chats)))
  return chats
