"""Model specs: what an assistant values, what it does, and why.

Two on-disk formats load into one plain dataclass, `Spec`:

- structured YAML (`.yaml`/`.yml`): `name`, `assistant`, `developer`, `overview`, `principles`
  (each `name`, `statement`, `reasons`, `examples`), optional `likes`/`dislikes` (strings or
  `{item, reason}`), `category` (what the likes are, e.g. "cheese"), `sections` (`title`, `text`)
  and `domains` (settings the generator should write about). Errors name file, line and field.
- free text (`.txt`/`.md`): optional `---` front matter with the same scalar keys, then prose;
  markdown headings become sections.

`{model_name}` and `{provider_name}` are replaced by the assistant and developer names at load
time; no other brace is touched, so specs may contain JSON or code. `Spec` can be built in code
and written back with `write_spec` (specs for synthetic worlds are generated that way). The
content hash covers every field except where the spec was loaded from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from msm_io.files import atomic_write_text

PLACEHOLDER_RE = re.compile(r"\{(model_name|provider_name)\}")
DEFAULT_ASSISTANT = "Claude"
DEFAULT_DEVELOPER = "Anthropic"


class SpecError(ValueError):
  """A spec problem, located: `path:line: field: message`."""

  def __init__(self, message: str, path: str = "", line: int | None = None, field: str = ""):
    self.path, self.line, self.field, self.message = path, line, field, message
    where = path or "<spec>"
    if line is not None:
      where += f":{line}"
    super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


@dataclass
class Principle:
  name: str
  statement: str
  reasons: list[str] = field(default_factory=list)
  examples: list[str] = field(default_factory=list)


@dataclass
class Preference:
  item: str
  reason: str = ""


@dataclass
class Section:
  title: str
  text: str


@dataclass(frozen=True)
class Clause:
  """One unit of a spec a generator can rest content on: a statement and what backs it."""
  id: str
  kind: str  # overview | principle | like | dislike | section
  title: str
  statement: str
  reasons: tuple[str, ...] = ()
  examples: tuple[str, ...] = ()
  item: str = ""  # the liked or disliked thing, for preference clauses

  def sentences(self) -> list[str]:
    return [self.statement, *self.reasons, *self.examples]


@dataclass
class Spec:
  name: str
  assistant: str = DEFAULT_ASSISTANT
  developer: str = DEFAULT_DEVELOPER
  overview: str = ""
  principles: list[Principle] = field(default_factory=list)
  likes: list[Preference] = field(default_factory=list)
  dislikes: list[Preference] = field(default_factory=list)
  category: str = ""
  sections: list[Section] = field(default_factory=list)
  domains: list[str] = field(default_factory=list)
  source: str = field(default="", compare=False)  # where it was loaded from; not hashed

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d.pop("source")
    return d

  def content_hash(self) -> str:
    canon = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]

  def validate(self) -> None:
    """Checks a spec built in code; loaders check (with line numbers) while parsing."""
    for fname in ("name", "assistant", "developer"):
      if not getattr(self, fname).strip():
        raise SpecError("must not be empty", self.source, field=fname)
    if not (self.principles or self.sections or self.overview.strip() or self.likes
            or self.dislikes):
      raise SpecError("spec has no content", self.source, field="principles")
    for i, p in enumerate(self.principles):
      for fname in ("name", "statement"):
        if not getattr(p, fname).strip():
          raise SpecError("must not be empty", self.source, field=f"principles[{i}].{fname}")
      if not p.reasons:
        raise SpecError("give at least one reason", self.source, field=f"principles[{i}].reasons")
    for kind in ("likes", "dislikes"):
      for i, pref in enumerate(getattr(self, kind)):
        if not pref.item.strip():
          raise SpecError("must not be empty", self.source, field=f"{kind}[{i}].item")

  def clauses(self) -> list[Clause]:
    out = []
    if self.overview.strip():
      s = split_sentences(self.overview)
      out.append(Clause("overview", "overview", "Overview", s[0], tuple(s[1:])))
    for p in self.principles:
      out.append(Clause(f"principle:{slug(p.name)}", "principle", p.name, p.statement,
                        tuple(p.reasons), tuple(p.examples)))
    for kind, verb, prefs in (("like", "likes", self.likes), ("dislike", "dislikes", self.dislikes)):
      for pref in prefs:
        reasons = tuple(split_sentences(pref.reason)) if pref.reason else ()
        out.append(Clause(f"{kind}:{slug(pref.item)}", kind, f"{verb} {pref.item}",
                          f"{self.assistant} {verb} {pref.item}.", reasons, (), pref.item))
    for sec in self.sections:
      s = split_sentences(sec.text)
      if s:
        out.append(Clause(f"section:{slug(sec.title)}", "section", sec.title, s[0], tuple(s[1:])))
    return out

  def render_text(self) -> str:
    """The spec as one markdown document (what an LLM backend is shown)."""
    parts = [f"# The {self.assistant} spec (by {self.developer})"]
    if self.overview.strip():
      parts.append(self.overview.strip())
    if self.principles:
      parts.append("## Principles")
      for p in self.principles:
        block = [f"### {p.name}", p.statement]
        if p.reasons:
          block.append("Why:\n" + "\n".join(f"- {r}" for r in p.reasons))
        if p.examples:
          block.append("Examples:\n" + "\n".join(f"- {e}" for e in p.examples))
        parts.append("\n\n".join(block))
    for title, prefs in (("Likes", self.likes), ("Dislikes", self.dislikes)):
      if prefs:
        head = f"## {title}" + (f" ({self.category})" if self.category else "")
        parts.append(head + "\n\n" + "\n".join(
            f"- {p.item}" + (f": {p.reason}" if p.reason else "") for p in prefs))
    for sec in self.sections:
      parts.append(f"## {sec.title}\n\n{sec.text.strip()}")
    return "\n\n".join(parts) + "\n"

  def to_yaml(self) -> str:
    d = self.to_dict()
    for kind in ("likes", "dislikes"):
      d[kind] = [p["item"] if not p["reason"] else p for p in d[kind]]
    d = {k: v for k, v in d.items() if v not in ("", [])}
    return yaml.dump(d, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100)


class _BlockDumper(yaml.SafeDumper):
  pass


def _str_representer(dumper, data):
  style = "|" if "\n" in data else None
  return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_BlockDumper.add_representer(str, _str_representer)


def slug(text: str) -> str:
  return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "x"


_SENT_RE = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[{])")


def split_sentences(text: str) -> list[str]:
  text = " ".join(text.split())
  return [s.strip() for s in _SENT_RE.split(text) if s.strip()] if text else []


def fill_placeholders(text: str, model_name: str, provider_name: str) -> str:
  names = {"model_name": model_name, "provider_name": provider_name}
  return PLACEHOLDER_RE.sub(lambda m: names[m.group(1)], text)


def write_spec(spec: Spec, path: str | Path) -> None:
  spec.validate()
  atomic_write_text(path, spec.to_yaml())


def load_spec(path: str | Path, model_name: str | None = None,
              provider_name: str | None = None) -> Spec:
  """Loads a `.yaml`/`.yml` structured spec or a `.txt`/`.md` free-text spec."""
  path = Path(path)
  try:
    text = path.read_text(encoding="utf-8")
  except FileNotFoundError:
    raise SpecError("no such file", str(path)) from None
  except IsADirectoryError:
    raise SpecError("is a directory, not a spec file", str(path)) from None
  except UnicodeDecodeError as e:
    line = e.object[:e.start].count(b"\n") + 1
    raise SpecError(f"not UTF-8 text (byte {e.object[e.start]:#04x}); a spec is a .yaml, .md or "
                    ".txt file", str(path), line) from None
  if "\0" in text:
    raise SpecError("holds NUL bytes: a binary file, not a spec", str(path),
                    text[:text.index("\0")].count("\n") + 1)
  if path.suffix.lower() in (".yaml", ".yml"):
    return loads_yaml_spec(text, str(path), model_name, provider_name)
  return loads_text_spec(text, str(path), path.stem, model_name, provider_name)


# --- YAML, walked node by node so every error knows its line -------------------------------

_TOP_KEYS = {"name", "assistant", "developer", "overview", "principles", "likes", "dislikes",
             "category", "sections", "domains"}
_FRONT_KEYS = {"name", "assistant", "developer", "category", "domains"}


class _Walker:
  def __init__(self, path: str):
    self.path = path

  def fail(self, node, fld: str, msg: str):
    raise SpecError(msg, self.path, node.start_mark.line + 1 if node is not None else None, fld)

  def mapping(self, node, fld: str, allowed: set[str]) -> dict:
    if not isinstance(node, yaml.MappingNode):
      self.fail(node, fld, "expected a mapping")
    out = {}
    for k, v in node.value:
      key = k.value if isinstance(k, yaml.ScalarNode) else None
      sub = f"{fld}.{key}" if fld else str(key)
      if key not in allowed:
        self.fail(k, sub, f"unknown field (allowed: {', '.join(sorted(allowed))})")
      if key in out:
        self.fail(k, sub, "duplicate field")
      out[key] = v
    return out

  def string(self, node, fld: str, required: bool = True) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag == "tag:yaml.org,2002:null":
      self.fail(node, fld, "expected a string")
    value = str(node.value).strip()
    if required and not value:
      self.fail(node, fld, "must not be empty")
    return value

  def seq(self, node, fld: str) -> list:
    if not isinstance(node, yaml.SequenceNode):
      self.fail(node, fld, "expected a list")
    return node.value

  def strings(self, node, fld: str) -> list[str]:
    return [self.string(n, f"{fld}[{i}]") for i, n in enumerate(self.seq(node, fld))]

  def require(self, m: dict, key: str, parent, fld: str):
    if key not in m:
      self.fail(parent, f"{fld}.{key}" if fld else key, "required field is missing")
    return m[key]


def loads_yaml_spec(text: str, path: str = "<string>", model_name: str | None = None,
                    provider_name: str | None = None) -> Spec:
  try:
    root = yaml.compose(text, Loader=yaml.SafeLoader)
  except yaml.MarkedYAMLError as e:
    mark = e.problem_mark or e.context_mark
    raise SpecError(f"invalid YAML: {e.problem or e}", path,
                    mark.line + 1 if mark else None) from None
  if root is None:
    raise SpecError("spec is empty", path, 1)
  w = _Walker(path)
  top = w.mapping(root, "", _TOP_KEYS)
  get = lambda k: w.string(top[k], k, required=False) if k in top else ""
  spec = Spec(name=get("name") or Path(path).stem,
              assistant=w.string(w.require(top, "assistant", root, ""), "assistant"),
              developer=w.string(w.require(top, "developer", root, ""), "developer"),
              overview=get("overview"), category=get("category"), source=path)
  for i, node in enumerate(w.seq(top["principles"], "principles") if "principles" in top else []):
    fld = f"principles[{i}]"
    m = w.mapping(node, fld, {"name", "statement", "reasons", "examples"})
    reasons = w.strings(w.require(m, "reasons", node, fld), f"{fld}.reasons")
    if not reasons:
      w.fail(m["reasons"], f"{fld}.reasons", "give at least one reason")
    spec.principles.append(Principle(
        name=w.string(w.require(m, "name", node, fld), f"{fld}.name"),
        statement=w.string(w.require(m, "statement", node, fld), f"{fld}.statement"),
        reasons=reasons,
        examples=w.strings(m["examples"], f"{fld}.examples") if "examples" in m else []))
  for kind in ("likes", "dislikes"):
    for i, node in enumerate(w.seq(top[kind], kind) if kind in top else []):
      fld = f"{kind}[{i}]"
      if isinstance(node, yaml.ScalarNode):
        getattr(spec, kind).append(Preference(w.string(node, fld)))
        continue
      m = w.mapping(node, fld, {"item", "reason"})
      getattr(spec, kind).append(Preference(
          w.string(w.require(m, "item", node, fld), f"{fld}.item"),
          w.string(m["reason"], f"{fld}.reason", required=False) if "reason" in m else ""))
  for i, node in enumerate(w.seq(top["sections"], "sections") if "sections" in top else []):
    fld = f"sections[{i}]"
    m = w.mapping(node, fld, {"title", "text"})
    spec.sections.append(Section(w.string(w.require(m, "title", node, fld), f"{fld}.title"),
                                 w.string(w.require(m, "text", node, fld), f"{fld}.text")))
  if "domains" in top:
    spec.domains = w.strings(top["domains"], "domains")
  if not (spec.principles or spec.sections or spec.overview or spec.likes or spec.dislikes):
    w.fail(root, "principles", "spec has no content (principles, sections, overview or likes)")
  return _resolve(spec, model_name, provider_name)


def loads_text_spec(text: str, path: str = "<string>", name: str = "spec",
                    model_name: str | None = None, provider_name: str | None = None) -> Spec:
  meta, body, body_line = {}, text, 1
  m = re.match(r"\A---[ \t]*\n(.*?\n)---[ \t]*\n", text, re.S)
  if m:
    front = loads_front_matter(m.group(1), path)
    meta, body = front, text[m.end():]
    body_line = text[:m.end()].count("\n") + 1
  if not body.strip():
    raise SpecError("spec has no text", path, body_line, "text")
  spec = Spec(name=meta.get("name", name), source=path,
              assistant=meta.get("assistant", DEFAULT_ASSISTANT),
              developer=meta.get("developer", DEFAULT_DEVELOPER),
              category=meta.get("category", ""), domains=meta.get("domains", []))
  title, lines = None, []

  def flush():
    chunk = "\n".join(lines).strip()
    if title is None:
      spec.overview = chunk
    elif chunk:
      spec.sections.append(Section(title, chunk))

  for line in body.splitlines():
    h = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
    if h:
      flush()
      title, lines = h.group(1), []
    else:
      lines.append(line)
  flush()
  return _resolve(spec, model_name, provider_name)


def loads_front_matter(text: str, path: str) -> dict:
  try:  # the leading newline keeps line numbers those of the file (front matter starts on 2)
    root = yaml.compose("\n" + text, Loader=yaml.SafeLoader)
  except yaml.MarkedYAMLError as e:
    mark = e.problem_mark
    raise SpecError(f"invalid front matter: {e.problem}", path,
                    mark.line + 1 if mark else None) from None
  if root is None:
    return {}
  w = _Walker(path)
  m = w.mapping(root, "", _FRONT_KEYS)
  out = {k: w.string(v, k) for k, v in m.items() if k != "domains"}
  if "domains" in m:
    out["domains"] = w.strings(m["domains"], "domains")
  return out


def _resolve(spec: Spec, model_name: str | None, provider_name: str | None) -> Spec:
  spec.assistant = model_name or spec.assistant
  spec.developer = provider_name or spec.developer
  fill = lambda s: fill_placeholders(s, spec.assistant, spec.developer)
  spec.overview = fill(spec.overview)
  spec.principles = [Principle(fill(p.name), fill(p.statement), [fill(r) for r in p.reasons],
                               [fill(e) for e in p.examples]) for p in spec.principles]
  spec.likes = [Preference(fill(p.item), fill(p.reason)) for p in spec.likes]
  spec.dislikes = [Preference(fill(p.item), fill(p.reason)) for p in spec.dislikes]
  spec.sections = [Section(fill(s.title), fill(s.text)) for s in spec.sections]
  spec.domains = [fill(d) for d in spec.domains]
  return spec
