"""Import layering, read from the source with `ast` (nothing is imported or run):

  msm_io          the I/O floor: imports neither msm_jax, data_pipelines nor jax
  data_pipelines  the document generator: never jax nor msm_jax
  msm_jax         the training library: never data_pipelines, except the orchestration layer
                  above both (the experiment layer and the top-level CLI)
  the model       model.py, model_config.py, sharding.py: nothing from data, eval, the CLI or
                  the experiment layer
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JAX = ("jax", "jaxlib", "flax", "optax", "orbax")
ORCHESTRATION = ("msm_jax.cli", "msm_jax.experiment")
MODEL = ("msm_jax.model", "msm_jax.model_config", "msm_jax.sharding")


@dataclasses.dataclass(frozen=True)
class Rule:
  why: str
  modules: tuple[str, ...]  # the rule covers these modules and everything under them
  forbidden: tuple[str, ...]
  exempt: tuple[str, ...] = ()


RULES = (
    Rule("the I/O floor stands alone", ("msm_io",), ("msm_jax", "data_pipelines", *JAX)),
    Rule("the generator imports neither jax nor msm_jax", ("data_pipelines",), ("msm_jax", *JAX)),
    Rule("the training library does not import the generator", ("msm_jax",), ("data_pipelines",),
         exempt=ORCHESTRATION),
    Rule("the model imports no data, eval, CLI or experiment code", MODEL,
         ("msm_jax.data", "msm_jax.eval", *ORCHESTRATION)),
)
PACKAGES = ("msm_io", "data_pipelines", "msm_jax")


def _under(name: str, prefixes) -> bool:
  return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_name(root: Path, path: Path) -> str:
  parts = list(path.relative_to(root).with_suffix("").parts)
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path, path: Path) -> list[tuple[int, str]]:
  """(line, module) for every import in the file, at any depth, relative ones resolved; for
  `from a import b` both `a` and `a.b` (b may be a submodule)."""
  name = module_name(root, path)
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = []
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
    if isinstance(node, ast.Import):
      out += [(node.lineno, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
      out.append((node.lineno, base))
      out += [(node.lineno, f"{base}.{a.name}") for a in node.names if a.name != "*"]
  return out


def violations(root: Path) -> list[str]:
  """`file:line: imports X (rule)` for every import that breaks a rule under `root`."""
  found = []
  for package in PACKAGES:
    for path in sorted((root / package).rglob("*.py")):
      name = module_name(root, path)
      rules = [r for r in RULES if _under(name, r.modules) and not _under(name, r.exempt)]
      for line, imported in imports(root, path) if rules else ():
        for rule in rules:
          if _under(imported, rule.forbidden):
            found.append(f"{path.relative_to(root)}:{line}: imports {imported} ({rule.why})")
  return sorted(set(found))


def test_the_tree_keeps_its_layers():
  assert violations(REPO) == []


def test_the_checker_catches_planted_violations(tmp_path):
  files = {
      "msm_io/__init__.py": "import json\n",
      "msm_io/bad.py": "from msm_jax.data import tokenizer\n",
      "data_pipelines/__init__.py": "",
      "data_pipelines/gen.py": "import os\n\ndef f():\n  import jax.numpy as jnp\n",
      "data_pipelines/ok.py": "from msm_io import files\nfrom . import gen\n",
      "msm_jax/__init__.py": "",
      "msm_jax/data/__init__.py": "",
      "msm_jax/data/sources.py": "from data_pipelines.files import iter_jsonl\n",
      "msm_jax/eval/__init__.py": "",
      "msm_jax/eval/suites.py": "from msm_io.files import iter_jsonl\nimport numpy\n",
      "msm_jax/trainer.py": "from msm_jax.data import pipeline\nimport data_pipelines\n",
      "msm_jax/model.py": "from .eval import scoring\nfrom msm_jax import sharding\n",
      "msm_jax/sharding.py": "from msm_jax import experiment\n",
      "msm_jax/model_config.py": "from msm_jax.config import base_config\n",
      "msm_jax/cli.py": "from data_pipelines import cli\nfrom msm_jax.eval import cli as e\n",
      "msm_jax/experiment/__init__.py": "from data_pipelines.worlds import WorldData\n",
  }
  for rel, text in files.items():
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(text)
  found = violations(tmp_path)
  assert [v.split(" (")[0] for v in found] == [
      "data_pipelines/gen.py:4: imports jax.numpy",
      "msm_io/bad.py:1: imports msm_jax.data",
      "msm_io/bad.py:1: imports msm_jax.data.tokenizer",
      "msm_jax/data/sources.py:1: imports data_pipelines.files",
      "msm_jax/data/sources.py:1: imports data_pipelines.files.iter_jsonl",
      "msm_jax/model.py:1: imports msm_jax.eval",
      "msm_jax/model.py:1: imports msm_jax.eval.scoring",
      "msm_jax/sharding.py:1: imports msm_jax.experiment",
      "msm_jax/trainer.py:2: imports data_pipelines",
  ]
  assert "(the generator imports neither jax nor msm_jax)" in found[0]
