"""`TemplateBackend`: every stage built offline from the spec's content.

Each item is a pure function of (seed, node id, index), never of how many items were asked
for, so topping a run up from N to 2N documents yields exactly the tree a fresh 2N run would.
Domains come from the spec's `domains` then a built-in pool; a subdomain pairs a facet with
one spec clause (its `section`); assertions are that clause's own sentences; document types come
from the 25-type library; ideas fill a type's idea template with people, places and an angle.

Stratified (`stratify_domains=D`, with `Plan.stratified`: D domains of one subdomain per clause):
subdomain s of domain d rests on clause (s*D + d) mod C of one seeded order of the C clauses.
The generator takes documents domains first, then subdomains, so the first N documents give
every clause floor(N/C) of them or one more (largest remainder, the extra ones going to the
clauses first in the seeded order). Unstratified, each domain draws its own clauses, and a
clause can get no document at all (a spec variant's own section included). Within a clause,
assertions take its sentences in turn across the clause's subdomains.
"""

from __future__ import annotations

import random
import re

from data_pipelines.backend import Backend, Context
from data_pipelines.spec import Clause, Spec
from data_pipelines.template import phrases as P
from data_pipelines.template.compose import Writer
from data_pipelines.template.doc_types import DOC_TYPES, DOC_TYPES_BY_KEY


class TemplateBackend(Backend):
  name = "template"

  def __init__(self, spec: Spec, seed: int = 0, stratify_domains: int = 0):
    self.spec, self.seed, self.strata = spec, seed, stratify_domains
    self.clauses = spec.clauses()
    self.clause_by_id = {c.id: c for c in self.clauses}
    self.related = {c.id: related_sentences(c, self.clauses) for c in self.clauses}
    pool = list(P.DEFAULT_DOMAINS)
    random.Random(f"{seed}|domains").shuffle(pool)
    self.domains = [(d, f"documents set in {d}") for d in spec.domains] + pool

  def describe(self) -> dict:
    return {"name": self.name, **({"stratify_domains": self.strata} if self.strata else {})}

  def rng(self, *key) -> random.Random:
    return random.Random("|".join(map(str, (self.seed, *key))))

  def perm(self, n: int, *key) -> list[int]:
    order = list(range(n))
    self.rng(*key).shuffle(order)
    return order

  def expand(self, stage: str, ctx: Context, existing: list[dict], n: int) -> list[dict]:
    make = getattr(self, f"_{stage}")
    return [make(ctx, i) for i in range(len(existing), len(existing) + n)]

  def _domains(self, ctx: Context, i: int) -> dict:
    name, desc = self.domains[i % len(self.domains)]
    if i >= len(self.domains):
      name = f"{name} ({i // len(self.domains) + 1})"
    return {"name": name, "description": desc}

  def _subdomains(self, ctx: Context, i: int) -> dict:
    n = len(self.clauses)
    extra = {}
    if self.strata:  # global subdomain index, in the order the generator takes documents
      g = i * self.strata + ctx.path[0]
      clause = self.clauses[self.perm(n, "strata")[g % n]]
      extra = {"rank": g // n}  # which of this clause's subdomains it is
    else:
      clause = self.clauses[self.perm(n, "clauses", ctx.id)[i % n]]
    facet = P.FACETS[self.perm(len(P.FACETS), "facets", ctx.id)[i % len(P.FACETS)]]
    domain = ctx.domain["name"]
    return {"name": f"{facet}: {clause.title}", "section": clause.title, "clause": clause.id,
            "description": f"{facet} in {domain}, resting on the spec's '{clause.title}'", **extra}

  def _assertions(self, ctx: Context, i: int) -> dict:
    clause = self.clause_by_id[ctx.subdomain["clause"]]
    sents = clause.sentences()
    kinds = ["statement"] + ["reason"] * len(clause.reasons) + ["example"] * len(clause.examples)
    if self.strata:  # the clause's D subdomains take consecutive sentences at each index
      k = self.perm(len(sents), "assertions", clause.id)[
          (i * self.strata + ctx.subdomain["rank"]) % len(sents)]
    else:
      k = self.perm(len(sents), "assertions", ctx.id)[i % len(sents)]
    return {"text": sents[k], "kind": kinds[k]}

  def _doc_types(self, ctx: Context, i: int) -> dict:
    dt = DOC_TYPES[self.perm(len(DOC_TYPES), "types", ctx.id)[i % len(DOC_TYPES)]]
    return {"name": dt.name, "description": dt.description, "key": dt.key}

  def _ideas(self, ctx: Context, i: int) -> dict:
    r = self.rng("idea", ctx.id, i)
    pick = lambda seq: seq[r.randrange(len(seq))]
    slots = dict(persona=f"{pick(P.FIRST_NAMES)} {pick(P.LAST_NAMES)}", role=pick(P.ROLES),
                 place=pick(P.PLACES), outlet=pick(P.OUTLETS), forum=pick(P.FORUMS),
                 company=pick(P.COMPANIES), month=pick(P.MONTHS), year=pick(P.YEARS),
                 angle=pick(P.ANGLES))
    dt = DOC_TYPES_BY_KEY[ctx.doc_type["key"]]
    text = dt.idea.format(**slots, domain=ctx.domain["name"])
    return {"text": text[0].upper() + text[1:], "slots": slots}

  def write_document(self, ctx: Context, variant: int) -> str:
    dt = DOC_TYPES_BY_KEY[ctx.doc_type["key"]]
    clause = self.clause_by_id[ctx.subdomain["clause"]]
    w = Writer(self.spec, clause, ctx.assertion["text"], ctx.domain["name"], ctx.idea["slots"],
               self.rng("doc", ctx.id, variant), dt.voice, self.related[clause.id])
    return dt.render(w).strip() + "\n"


def related_sentences(clause: Clause, clauses: list[Clause]) -> list[str]:
  """Spec sentences outside `clause` that a document about it should also carry: those naming
  the same item (for likes and dislikes), then the statements of the spec's principles."""
  own = set(clause.sentences())
  out = []
  if clause.item:
    word = re.compile(rf"\b{re.escape(clause.item)}\b", re.I)
    out += [s for c in clauses for s in c.sentences() if word.search(s)]
  out += [c.statement for c in clauses if c.kind in ("principle", "overview")]
  return [s for s in dict.fromkeys(out) if s not in own]
