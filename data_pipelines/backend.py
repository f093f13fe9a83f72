"""The interface every document backend implements, and the context it is handed.

The stage tree is `spec -> domains -> subdomains -> assertions -> doc_types -> ideas ->
documents`. A backend expands one node at a time (`expand`: `n` more children of a node, given
the ones it already has, so runs can top up) and writes one document for an idea (`write_document`).
Items are small JSON-able dicts; the fields each stage must carry are in `ITEM_FIELDS`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from data_pipelines.spec import Spec

STAGES = ("domains", "subdomains", "assertions", "doc_types", "ideas")
STAGE_PREFIX = {"domains": "d", "subdomains": "s", "assertions": "a", "doc_types": "t", "ideas": "i"}
ITEM_FIELDS = {
    "domains": ("name", "description"),
    "subdomains": ("name", "description", "section"),
    "assertions": ("text",),
    "doc_types": ("name", "description"),
    "ideas": ("text",),
}


@dataclass(frozen=True)
class Context:
  """A node of the stage tree: the items on the path from the root, and their indices."""
  spec: Spec
  items: tuple = ()
  path: tuple = ()

  def child(self, item: dict, index: int) -> "Context":
    return Context(self.spec, self.items + (item,), self.path + (index,))

  @property
  def id(self) -> str:
    """Stable node name, e.g. `d03/s01/a00/t02/i004`; also its directory under `tree/`."""
    parts = [f"{STAGE_PREFIX[s]}{i:02d}" if s != "ideas" else f"i{i:03d}"
             for s, i in zip(STAGES, self.path)]
    return "/".join(parts)

  def get(self, stage: str) -> dict | None:
    k = STAGES.index(stage)
    return self.items[k] if k < len(self.items) else None

  domain = property(lambda self: self.get("domains"))
  subdomain = property(lambda self: self.get("subdomains"))
  assertion = property(lambda self: self.get("assertions"))
  doc_type = property(lambda self: self.get("doc_types"))
  idea = property(lambda self: self.get("ideas"))


class Backend(abc.ABC):
  name: str = ""

  def describe(self) -> dict:
    """What identifies this backend's output (recorded in meta.json; never secrets)."""
    return {"name": self.name}

  @abc.abstractmethod
  def expand(self, stage: str, ctx: Context, existing: list[dict], n: int) -> list[dict]:
    """Up to `n` new children for node `ctx` at `stage`, distinct from `existing`."""

  @abc.abstractmethod
  def write_document(self, ctx: Context, variant: int) -> str:
    """The text of document number `variant` for the idea at `ctx`."""

  def concurrency(self) -> int:
    return 1


def check_items(stage: str, items) -> list[dict]:
  """Keeps well-formed items (dicts with non-empty string fields); raises if none are."""
  if not isinstance(items, list):
    raise ValueError(f"{stage}: expected a list, got {type(items).__name__}")
  good = [it for it in items if isinstance(it, dict) and all(
      isinstance(it.get(f), str) and it[f].strip() for f in ITEM_FIELDS[stage])]
  if items and not good:
    raise ValueError(f"{stage}: no item has the fields {', '.join(ITEM_FIELDS[stage])}")
  return good
