"""Data pipeline benchmark: prints one JSON line.

Each `bench_*` function measures one stage and returns a flat dict; `main` runs those in
`BENCHMARKS` and merges them, so another stage (e.g. Grain tokenise + pack tokens/s) is one
more function in the list.

    .venv/bin/python benchmarks/data_pipeline.py [--docs 2000] [--spec PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data_pipelines.docgen import DocumentGenerator, Plan  # noqa: E402
from data_pipelines.spec import load_spec  # noqa: E402
from data_pipelines.template.backend import TemplateBackend  # noqa: E402

DEFAULT_SPEC = ROOT / "data_pipelines" / "specs" / "cheese_america.yaml"


def bench_template_generator(args) -> dict:
  """End to end `msm generate docs` work for a fresh corpus: stage tree, documents, files,
  export (shuffle, token stats, near-duplicate measure, histogram)."""
  spec = load_spec(args.spec)
  with tempfile.TemporaryDirectory() as out:
    t0 = time.perf_counter()
    summary, stats = DocumentGenerator(spec, out, TemplateBackend(spec, 0),
                                       Plan.for_count(args.docs), args.docs, 0,
                                       progress=False).run()
    dt = time.perf_counter() - t0
  return {"template_docs": stats.generated, "template_seconds": round(dt, 3),
          "template_docs_per_s": round(stats.generated / dt, 1),
          "template_tokens": summary["tokens"]["total_tokens"],
          "template_near_duplicate_share": summary["similarity"]["near_duplicate_share"],
          "spec_words": len(spec.render_text().split())}


BENCHMARKS = [bench_template_generator]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--docs", type=int, default=2000)
  p.add_argument("--spec", default=str(DEFAULT_SPEC))
  args = p.parse_args(argv)
  result = {"benchmark": "data_pipeline"}
  for bench in BENCHMARKS:
    result.update(bench(args))
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
