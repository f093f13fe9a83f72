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
  out = Path(args.workdir) / "docs"
  t0 = time.perf_counter()
  summary, stats = DocumentGenerator(spec, out, TemplateBackend(spec, 0),
                                     Plan.for_count(args.docs), args.docs, 0,
                                     progress=False).run()
  dt = time.perf_counter() - t0
  args.corpus = out / "dataset.jsonl"
  return {"template_docs": stats.generated, "template_seconds": round(dt, 3),
          "template_docs_per_s": round(stats.generated / dt, 1),
          "template_tokens": summary["tokens"]["total_tokens"],
          "template_near_duplicate_share": summary["similarity"]["near_duplicate_share"],
          "spec_words": len(spec.render_text().split())}


def _small_config(corpus):
  from msm_jax.config import load_config
  cfg = load_config(ROOT / "configs" / "small.py")
  cfg.stage, cfg.data.train, cfg.data.eval, cfg.mesh.data = "midtrain", (str(corpus),), (), 1
  return cfg


def bench_grain_pipeline(args, batches: int = 200) -> dict:
  """Tokenise + pack + batch tokens/s of the Grain pipeline on the generated corpus, with the
  small CPU config's batch shape, in this process (worker_count=0)."""
  from msm_jax.data.pipeline import build_tokenizer, make_train_iterator
  cfg = _small_config(args.corpus)
  tok = build_tokenizer(cfg, Path(args.workdir) / "run")
  args.tokenizer = tok
  it = make_train_iterator(cfg, tok, process_index=0, process_count=1)
  next(it)  # start-up (threads, first reads) is not throughput
  t0 = time.perf_counter()
  real = sum(int((next(it)["segment_ids"] > 0).sum()) for _ in range(batches))
  dt = time.perf_counter() - t0
  return {"pipeline_tokens_per_s": round(real / dt), "pipeline_batches": batches,
          "pipeline_row_fill": round(real / (batches * cfg.batch_size * cfg.seq_len), 3)}


def bench_small_model_training(args, steps: int = 8) -> dict:
  """Training tokens/s of the small CPU model (one device), the rate the pipeline must beat."""
  import jax
  import numpy as np
  from msm_jax import sharding as shd
  from msm_jax.data.pipeline import make_train_iterator
  from msm_jax.model import ModelDef
  from msm_jax.train_step import StepFunctions
  cfg = _small_config(args.corpus)
  mesh = shd.make_mesh(cfg, jax.devices()[:1])
  sf = StepFunctions(cfg, ModelDef(cfg.model), mesh)
  state = sf.init_state(0)
  it = make_train_iterator(cfg, args.tokenizer, process_index=0, process_count=1)
  rates = []
  for i in range(steps + 2):
    batch = next(it)
    real = int((batch["segment_ids"] > 0).sum())
    t0 = time.perf_counter()
    state, m = sf.train(state, shd.host_local_to_global(batch, mesh))
    m["loss"].block_until_ready()
    if i >= 2:  # the first steps compile
      rates.append(real / (time.perf_counter() - t0))
  return {"train_tokens_per_s": round(float(np.median(rates)))}


BENCHMARKS = [bench_template_generator, bench_grain_pipeline, bench_small_model_training]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--docs", type=int, default=2000)
  p.add_argument("--spec", default=str(DEFAULT_SPEC))
  args = p.parse_args(argv)
  result = {"benchmark": "data_pipeline"}
  with tempfile.TemporaryDirectory() as workdir:
    args.workdir = workdir
    for bench in BENCHMARKS:
      result.update(bench(args))
  result["pipeline_over_train"] = round(result["pipeline_tokens_per_s"]
                                        / result["train_tokens_per_s"], 1)
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main())
