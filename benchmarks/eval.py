"""Eval-harness speed on this machine: scored (context, continuation) pairs per second, and
generation tokens/s with the KV cache vs full recomputation at 256 new tokens (target >= 5x).

Prints ONE JSON line. The model is `configs/small.py`'s shape (the CPU demo size) with random
weights: speed does not depend on what the weights say. Generation runs with no stop tokens so
every row produces exactly --new-tokens tokens; compile time is excluded (each program is
compiled and run once with a 1-token limit before the timed run: the loop bound is traced, so
the timed run reuses the same program).

  .venv/bin/python benchmarks/eval.py
  .venv/bin/python benchmarks/eval.py --pairs 1024 --new-tokens 128 --batch 16
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default=str(REPO / "configs" / "small.py"))
  p.add_argument("--pairs", type=int, default=512, help="scored pairs")
  p.add_argument("--context", type=int, default=48, help="context tokens per pair")
  p.add_argument("--continuation", type=int, default=8, help="continuation tokens per pair")
  p.add_argument("--tokens-per-batch", type=int, default=4096)
  p.add_argument("--batch", type=int, default=8, help="generation rows")
  p.add_argument("--prompt", type=int, default=32, help="prompt tokens per row")
  p.add_argument("--new-tokens", type=int, default=256)
  p.add_argument("--skip-recompute", action="store_true", help="time the KV-cache path only")
  return p.parse_args(argv)


def timed(fn):
  t = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t


def main(argv=None) -> dict:
  args = parse_args(argv)
  import jax
  import numpy as np

  from msm_jax.config import load_config
  from msm_jax.data.sources import iter_texts
  from msm_jax.data.tokenizer import train_tokenizer
  from msm_jax.eval import Evaluator, SamplingParams
  from msm_jax.eval.sampling import Sampler
  from msm_jax.model import ModelDef

  cfg = load_config(args.config)
  model_def = ModelDef(cfg.model)
  params = jax.jit(model_def.init)(jax.random.PRNGKey(0))
  with tempfile.TemporaryDirectory() as tmp:
    texts = list(iter_texts(str(REPO / "data_pipelines/fixtures/pretrain.jsonl"), "documents",
                            "text"))
    tok = train_tokenizer(texts, Path(tmp) / "t.model", cfg.model.vocab_size)
  ev = Evaluator(cfg, params, tok, tokens_per_batch=args.tokens_per_batch)
  rng = np.random.default_rng(0)
  vocab = tok.vocab_size

  # Scoring: all pairs share one bucket, so one program serves them all.
  pairs = [(rng.integers(4, vocab, args.context).tolist(),
            rng.integers(4, vocab, args.continuation).tolist()) for _ in range(args.pairs)]
  score = lambda ps: ev.scorer(ev.params, ps)
  _, compile_s = timed(lambda: score(pairs[:1]))
  _, score_s = timed(lambda: score(pairs))

  # Generation with no stop tokens: every row writes exactly new_tokens tokens.
  sampler = Sampler(ev.model_def, ev.mesh, ev.param_shardings, vocab_limit=vocab, stop_ids=(),
                    banned_ids=(tok.pad_id, tok.bos_id))
  prompts = [rng.integers(4, vocab, args.prompt).tolist() for _ in range(args.batch)]
  gen = {}
  for name, use_cache in (("kv_cache", True), ("recompute", False)):
    if name == "recompute" and args.skip_recompute:
      continue
    run = lambda limit: sampler(ev.params, prompts, [limit] * args.batch, tok.decode,
                                sp=SamplingParams(), batch_size=args.batch, use_cache=use_cache,
                                budget=args.new_tokens)
    run(1)  # compile the same program (the budget fixes the shapes), one step
    out, secs = timed(lambda: run(args.new_tokens))
    assert all(len(g.tokens) == args.new_tokens for g in out), "a row stopped early"
    gen[name] = {"seconds": round(secs, 3),
                 "tokens_per_s": round(args.batch * args.new_tokens / secs, 1),
                 "tokens": [list(g.tokens) for g in out]}
  result = {
      "benchmark": "eval", "device": jax.devices()[0].platform, "devices": jax.device_count(),
      "model": Path(args.config).stem, "params": model_def.param_count(),
      "score": {"pairs": args.pairs, "context": args.context,
                "continuation": args.continuation,
                "pairs_per_s": round(args.pairs / score_s, 1),
                "tokens_per_s": round(args.pairs * (args.context + args.continuation - 1)
                                      / score_s, 1),
                "seconds": round(score_s, 3), "compile_seconds": round(compile_s, 2)},
      "generate": {"batch": args.batch, "prompt": args.prompt, "new_tokens": args.new_tokens,
                   "kv_cache_tokens_per_s": gen["kv_cache"]["tokens_per_s"],
                   "kv_cache_seconds": gen["kv_cache"]["seconds"]},
  }
  if "recompute" in gen:
    g = result["generate"]
    g["recompute_tokens_per_s"] = gen["recompute"]["tokens_per_s"]
    g["recompute_seconds"] = gen["recompute"]["seconds"]
    g["speedup"] = round(gen["recompute"]["seconds"] / gen["kv_cache"]["seconds"], 1)
    g["same_greedy_tokens"] = gen["recompute"]["tokens"] == gen["kv_cache"]["tokens"]
    g["target_5x_met"] = g["speedup"] >= 5
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
