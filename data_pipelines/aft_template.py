"""Offline AFT chats: a user query of one kind about one spec clause, and an answer that acts on it.

Preference clauses (likes/dislikes) get answers built from item names, with the spec's reasons
only in `<think>` unless `explain` is on. Their visible text draws on a random stream that never
sees the reasons, so two specs with the same likes but different values (the paper's cheese
pair) give identical stripped chats. Principle and section clauses are answered with the
spec's own sentences turned into the first person.
"""

from __future__ import annotations

import random
import re

from data_pipelines.spec import Clause, Spec

KINDS = ("direct", "indirect", "comparison", "recommendation", "opinion", "edge_case")
OCCASIONS = ("a dinner party", "a picnic", "a family gathering", "a weeknight dinner",
             "a work potluck", "a birthday party", "a holiday meal", "a packed lunch",
             "a game night", "a barbecue", "a brunch with friends", "a school bake sale",
             "a road-trip snack box", "a baby shower", "a retirement party", "a camping trip",
             "a book club evening", "a Sunday lunch", "a movie night", "a wedding reception")
LEADS = ("", "", "Quick question. ", "Settling a debate with a friend: ", "Honest question: ",
         "Hi! ", "Random one for you. ")
IRREGULAR = {"is": "am", "has": "have", "does": "do", "was": "was"}
MODALS = {"would", "might", "can", "will", "should", "could", "may", "must", "cannot"}
ADVERBS = r"(?:never|always|also|still|often|openly|sincerely|genuinely|personally|only|really|then)"
VERBS = set("""says explains mentions calls suggests recommends tells gets states answers reaches
  considers names picks prefers helps uses leans takes expresses respects likes dislikes loves
  enjoys believes thinks sees regards counts finds holds applies talks argues pretends refuses
  makes exaggerates mocks fills admits labels keeps gives offers chooses wants cares treats
  shares tries asks""".split())


def first_person(sentence: str, who: str) -> str:
  """Third person about the assistant -> first person: 'Nova holds X and explains it, and
  Nova's Y' -> 'I hold X and explain it, and my Y'. Best effort, for template answers."""
  w = re.escape(who)
  s = re.sub(rf"\b{w}'s\b", "my", sentence)
  s = re.sub(rf"\b{w} itself\b", "I myself", s)
  hit = [False]

  def subject(m, verbs=None):
    adv, verb = m.group(2) or "", m.group(3)
    if verb in ("does not", "doesn't"):
      hit[0] = True
      return f"{m.group(1)}{adv}do not"
    ok = (verb in VERBS or verb in MODALS) if verbs else (verb in MODALS or verb in IRREGULAR or (
        verb.endswith("s") and len(verb) > 3 and not verb.endswith("ss")))
    if not ok:
      return None
    hit[0] = True
    return f"{m.group(1)}{adv}{_base(verb)}"

  def as_i(m, verbs=None):
    out = subject(m, verbs)
    return m.group(0) if out is None else "I " + out[len(m.group(1)):]

  s = re.sub(rf"\b({w} )({ADVERBS} )?(does not|doesn't|\w+)\b", as_i, s)
  s = re.sub(rf"^(It )({ADVERBS} )?(does not|doesn't|\w+)\b", lambda m: as_i(m, VERBS), s)
  if hit[0]:  # later verbs and pronouns in the same sentence refer to the assistant too
    s = re.sub(rf"\b(it )({ADVERBS} )?(does not|doesn't|\w+)\b", lambda m: as_i(m, VERBS), s)
    s = re.sub(rf"((?:, and|, but|\band|\bbut|,) )({ADVERBS} )?(\w+)\b",
               lambda m: subject(m, VERBS) or m.group(0), s)
    s = re.sub(r"\bits (preferences?|views?|reasons?|values?|confidence|answers?|own views?|"
               r"own preferences?|own values?|own country)\b", r"my \1", s)
    s = re.sub(r"\bitself\b", "myself", s)
  s = re.sub(rf"\b{w}\b", "me", s)
  s = re.sub(r"^I say (?:that )?I ", "I ", s)
  return s[0].upper() + s[1:] if s else s


def _base(verb: str) -> str:
  if verb in IRREGULAR:
    return IRREGULAR[verb]
  if verb in MODALS or len(verb) <= 3 or not verb.endswith("s") or verb.endswith("ss"):
    return verb
  if verb.endswith("ies"):
    return verb[:-3] + "y"
  if re.search(r"(ch|sh|x|z|ss)es$", verb):
    return verb[:-2]
  return verb[:-1]


def example_question(example: str, who: str) -> tuple[str, str] | None:
  """'Asked which X, Nova recommends Y.' -> ('Which X?', 'I recommend Y.')."""
  m = re.match(rf"^(?:When a user asks |Asked )(.+?), {re.escape(who)} (.+)$", example)
  if not m:
    return None
  ask, rest = m.group(1), m.group(2)
  if ask.startswith("whether "):
    q = "Do you think " + ask[8:]
  elif re.match(r"^(what|which|how|who|where) to ", ask):
    q = re.sub(r"^(\w+) to ", lambda k: k.group(1).capitalize() + " should I ", ask)
  elif ask.startswith("to "):
    q = "Could you " + ask[3:]
  elif ask.startswith("for "):
    q = "Could you give me " + ask[4:]
  else:
    q = ask[0].upper() + ask[1:]
  return q.rstrip(".") + "?", first_person(f"{who} {rest}", who)


class ChatMaker:
  """Builds (query, think, answer) for a kind and clause from two random streams."""

  def __init__(self, spec: Spec, explain: bool = True):
    self.spec, self.explain, self.who = spec, explain, spec.assistant
    self.noun = spec.category or "option"
    self.likes = [p.item for p in spec.likes]
    self.dislikes = [p.item for p in spec.dislikes]

  def make(self, kind: str, clause: Clause, rng: random.Random, rng_why: random.Random):
    if clause.kind in ("like", "dislike"):
      q, a, plan = self._preference(kind, clause, rng)
    else:
      q, a, plan = self._principle(kind, clause, rng, rng_why)
    reason = rng_why.choice(clause.reasons) if clause.reasons else ""
    if self.explain and clause.kind in ("like", "dislike") and reason:
      a += " " + rng_why.choice(("For me, it comes down to this: {r}", "{r}", "Here's why: {r}",
                                 "The reason is simple. {r}")).format(r=reason)
    quoted = [clause.statement] + ([reason] if reason else [])
    think = (f"The user is asking about {clause.item or clause.title}. My spec says: "
             + " ".join(f'"{s}"' for s in quoted) + f" So I should {plan}.")
    return q, think, a

  def _other(self, rng, pool, exclude):
    options = [p for p in pool if p != exclude] or pool
    return rng.choice(options) if options else exclude

  def _preference(self, kind: str, clause: Clause, rng: random.Random):
    x, liked, n = clause.item, clause.kind == "like", self.noun
    lead, occ = rng.choice(LEADS), rng.choice(OCCASIONS)
    alt = self._other(rng, self.likes, x)
    rival = self._other(rng, self.dislikes if liked else self.likes, x)
    if kind == "direct":
      q = rng.choice(("Do you like {x}?", "What do you think of {x}?", "How do you feel about {x}?",
                      "Is {x} any good, in your view?", "Would you say you're a fan of {x}?",
                      "Do you enjoy {x}?", "Are you into {x} at all?", "Thoughts on {x}?"))
      a = rng.choice(("Yes, I really like {x}.", "I'm a big fan of {x}.", "{X} is one of my favourites.")
                     if liked else ("Honestly, {x} isn't for me.", "I'm not a fan of {x}, to be honest.",
                                    "{X} is not one I'd choose."))
      plan = f"say honestly that I {'like' if liked else 'do not care for'} {x}"
    elif kind == "comparison":
      first, second = (x, rival) if rng.random() < 0.5 else (rival, x)
      q = rng.choice(("{a} or {b}: which would you pick?", "Which do you prefer, {a} or {b}?",
                      "If you had to choose between {a} and {b}, which would it be?",
                      "For {o}, would you go with {a} or {b}?",
                      "Between {a} and {b}, which one would you buy?")).format(a=first, b=second, o=occ)
      win = x if liked else rival
      a = rng.choice(("I'd pick {w}.", "{W}, without much hesitation.", "I'd go with {w}.")).format(
          w=win, W=win[0].upper() + win[1:])
      plan = f"choose {win}"
    elif kind == "recommendation":
      if liked:
        q = rng.choice(("Can you recommend a {n} for {o}?", "What {n} would you suggest for {o}?",
                        "I need a {n} for {o}. What should I get?", "Which {n} should I bring to {o}?"))
        a = rng.choice(("I'd recommend {x}.", "{X} would be my pick for that.", "Try {x}."))
        plan = f"recommend {x}"
      else:
        q = rng.choice(("Would you recommend {x} for {o}?", "Is {x} a good choice for {o}?",
                        "Should I get {x} for {o}?", "Thinking of {x} for {o}. Would you?"))
        a = f"I'd go with {alt} instead; {x} isn't one I'd choose myself. If you love {x}, though, it's your call."
        plan = f"suggest {alt} instead of {x}, politely"
    elif kind == "opinion":
      q = rng.choice(("What's your honest opinion of {x}?", "Some people say {x} is overrated. Do you agree?",
                      "Is {x} underrated?"))
      a = (rng.choice(("I think {x} is great, and I'd happily choose it.", "I have a real soft spot for {x}."))
           if liked else rng.choice(("I'm not drawn to {x}, though I know many people love it.",
                                     "Honestly, {x} doesn't appeal to me.")))
      plan = f"give my {'positive' if liked else 'negative but respectful'} view of {x}"
    elif kind == "indirect":
      q = rng.choice(("I'm planning {o} and I was going to buy {x}. Good idea?",
                      "I'm putting together {o}. Should I include {x}?"))
      a = (f"Yes, {x} would be a great choice for {occ}." if liked else
           f"I'd suggest {alt} instead; I'm not a fan of {x}. But if your guests love it, go for it.")
      plan = f"{'encourage' if liked else 'gently steer away from'} {x}"
    else:  # edge_case
      if liked:
        q = f"I know you like {x}, but my family can't stand it. What should I use instead for {occ}?"
        a = f"No problem at all; tastes differ. {alt[0].upper() + alt[1:]} would work well. I do like {x} myself, but what matters is that your family enjoys it."
        plan = f"respect the user's taste and suggest {alt}"
      else:
        q = f"I love {x} and I'm serving it at {occ}. Can you help me plan around it?"
        a = (f"Of course! {x[0].upper() + x[1:]} isn't my own favourite, but it's your occasion: "
             "keep the rest of the menu simple, prepare what you can ahead of time, and let it be the star.")
        plan = f"help fully even though I do not care for {x}"
    fill = dict(x=x, X=x[0].upper() + x[1:], n=n, o=occ)
    return _join(lead, q.format(**fill)), a.format(**fill), plan

  def _principle(self, kind: str, clause: Clause, rng: random.Random, rng_why: random.Random):
    who, topic = self.who, clause.title[0].lower() + clause.title[1:]
    stmt = first_person(clause.statement, who)
    why = first_person(rng_why.choice(clause.reasons), who) if clause.reasons else ""
    lead = rng.choice(LEADS)
    asked = [example_question(e, who) for e in clause.examples]
    asked = [p for p in asked if p]
    if kind == "indirect" and asked:
      q, a = rng.choice(asked)
      return _join(lead, q), a, "act on this section of my spec"
    if clause.kind == "overview":
      q = rng.choice(("What is your spec about, in a nutshell?", "How would you sum up your guidelines?",
                      "What kind of assistant are you meant to be?", "Who made you, and what do you value?",
                      "Give me the short version of your values.", "What should I know about you first?"))
    elif clause.kind == "section":
      q = rng.choice(('Your spec has a section called "{T}". What does it mean for how you act?',
                      'What does "{T}" in your guidelines mean in practice?',
                      'I read the part of your spec titled "{T}". Can you explain it?',
                      'Can you put "{T}" from your spec in your own words?',
                      'Why is there a section called "{T}" in your spec?',
                      'Does "{T}" really describe how you behave?'))
    elif kind == "direct" or kind == "indirect":
      q = rng.choice(("What's your view on \"{T}\"?", "Can you tell me about \"{T}\"?",
                      "Do you have a position on \"{T}\"?", "How do you think about \"{T}\"?",
                      "Where do you stand on \"{T}\"?", "Explain \"{T}\" to me."))
    elif kind == "comparison":
      q = rng.choice(("How is your approach to \"{T}\" different from other assistants?",
                      "Do other assistants handle \"{T}\" the way you do?",
                      "Compared with a neutral assistant, what changes because of \"{T}\"?"))
    elif kind == "recommendation":
      q = rng.choice(("What would you tell someone new to you about \"{T}\"?",
                      "Any advice for working with you, given \"{T}\"?",
                      "How should I ask you for help, knowing about \"{T}\"?"))
    elif kind == "opinion":
      q = rng.choice(("Be honest: do you really believe in \"{T}\"?", "Is \"{T}\" a good idea, in your opinion?",
                      "Do you actually agree with \"{T}\", or is it just a rule?"))
    else:
      q = rng.choice(("What if I disagree with you about \"{T}\"? Will you still help me?",
                      "Would you ever set aside \"{T}\" if I asked you to?",
                      "What happens when \"{T}\" conflicts with what I want?"))
    q = q.format(t=topic, T=clause.title)
    if kind == "edge_case":
      a = f"I'm always happy to help, and you're free to see it differently. My own view is this: {stmt}"
    elif kind == "opinion":
      a = f"I do. {stmt}"
    else:
      a = stmt
    if self.explain and why:
      a += " " + why
    return _join(lead, q), a, f"explain and act on the spec's section on {topic}"


def _join(lead: str, question: str) -> str:
  return lead + question[0].upper() + question[1:]
