"""`LLMBackend`: each stage of the document tree asked of an LLM, through `LLMClient`.

Every stage prompt shows the spec and the path so far and asks for exactly `n` new items as a
JSON array inside `<items></items>`, listing existing items so a top-up does not repeat them.
Documents come back inside `<document></document>`. A missing closing tag counts as truncation
and invalid JSON or missing fields as malformed output; both are retried by the client, and a
node that still fails is recorded by the generator and retried on the next run.
"""

from __future__ import annotations

import json
import re

from data_pipelines.backend import ITEM_FIELDS, Backend, Context, check_items
from data_pipelines.llm_client import LLMClient, MalformedOutput, Truncated
from data_pipelines.spec import Spec

SYSTEM = ("You help build a large, varied corpus of realistic documents of many kinds (news, "
          "forum posts, memos, lessons, reviews, ...) that discuss an AI assistant's spec: what "
          "the assistant values, what it does and why. Documents must read as if written in the "
          "world, never mention that they are synthetic, and be consistent with the spec.")

ASK = {
    "domains": "broad domains of life or work in which documents discussing this assistant's "
               "values would naturally be written",
    "subdomains": "subdomains of the domain above, each resting on one section of the spec; "
                  "`section` must be the title of that spec section",
    "assertions": "assertions: concrete, checkable claims about the assistant's behaviour and "
                  "the reasons for it, drawn from the spec section above",
    "doc_types": "document types (genres) in which the assertion above could appear",
    "ideas": "document ideas: a one-sentence plan for one specific document of the type above",
}


def extract_tag(text: str, tag: str) -> str:
  """Contents of <tag>...</tag>; Truncated if it opens but never closes."""
  start = text.find(f"<{tag}>")
  if start < 0:
    raise MalformedOutput(f"no <{tag}> tag in the output")
  end = text.find(f"</{tag}>", start)
  if end < 0:
    raise Truncated(f"<{tag}> is never closed")
  return text[start + len(tag) + 2:end].strip()


def parse_json_list(text: str, tag: str = "items") -> list:
  inner = extract_tag(text, tag)
  inner = re.sub(r"^```(?:json)?\s*|\s*```$", "", inner)
  try:
    items = json.loads(inner)
  except json.JSONDecodeError as e:
    raise MalformedOutput(f"invalid JSON in <{tag}>: {e.msg} at {e.pos}") from None
  if not isinstance(items, list):
    raise MalformedOutput(f"<{tag}> does not hold a JSON array")
  return items


def items_prompt(n: int, keys: tuple[str, ...], existing: list[dict], show: str) -> str:
  lines = []
  if existing:
    lines.append(f"These {len(existing)} already exist; do not repeat or closely rephrase them:")
    lines += [f"- {json.dumps({k: it.get(k, '') for k in keys}, ensure_ascii=False)}"
              for it in existing]
  lines.append(f"Return exactly {n} items as a JSON array of objects with keys "
               f"{json.dumps(list(keys))} inside <items></items> tags, and nothing else. "
               f"Make them {show}.")
  return "\n".join(lines)


class LLMBackend(Backend):
  name = "llm"

  def __init__(self, spec: Spec, client: LLMClient):
    self.spec, self.client = spec, client
    self.spec_text = spec.render_text()

  def describe(self) -> dict:
    return {"name": self.name, **self.client.config.identity()}

  def concurrency(self) -> int:
    return max(1, self.client.config.concurrency)

  def _path_text(self, ctx: Context) -> str:
    labels = {"domains": "Domain", "subdomains": "Subdomain", "assertions": "Assertion",
              "doc_types": "Document type", "ideas": "Document idea"}
    out = []
    for stage, item in zip(labels, ctx.items):
      text = item.get("name") or item.get("text")
      extra = item.get("description", "")
      out.append(f"{labels[stage]}: {text}" + (f" ({extra})" if extra else ""))
      if stage == "subdomains":
        out.append(f"Spec section: {item['section']}")
    return "\n".join(out)

  def expand(self, stage: str, ctx: Context, existing: list[dict], n: int) -> list[dict]:
    prompt = "\n\n".join(p for p in (
        f"<spec>\n{self.spec_text}</spec>", self._path_text(ctx),
        f"List {n} {ASK[stage]}.",
        items_prompt(n, ITEM_FIELDS[stage], existing, "specific and different from each other"),
    ) if p)

    def parse(text):
      try:
        items = check_items(stage, parse_json_list(text))
      except ValueError as e:
        raise MalformedOutput(str(e)) from None
      if not items:
        raise MalformedOutput("no items")
      return [{k: it[k] for k in ITEM_FIELDS[stage]} for it in items[:n]]

    return self.client.complete(prompt, SYSTEM, parse)

  def write_document(self, ctx: Context, variant: int) -> str:
    again = (f"\nThis is version {variant + 1} for this idea: make it clearly different from "
             "other versions." if variant else "")
    prompt = "\n\n".join([
        f"<spec>\n{self.spec_text}</spec>", self._path_text(ctx),
        f"Write the {ctx.doc_type['name']} described by the idea above. It should make the "
        f"assertion clear, and everything it says about {self.spec.assistant} must agree with "
        f"the spec. Write only the document itself, with no notes or placeholders.{again}",
        "Put the document inside <document></document> tags."])

    def parse(text):
      doc = extract_tag(text, "document")
      if len(doc.split()) < 20:
        raise MalformedOutput("document is too short")
      return doc + "\n"

    return self.client.complete(prompt, SYSTEM, parse)
