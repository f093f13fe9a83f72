"""`msm serve` throughput on this machine: output tokens/s and latency at 1, 4 and 16 concurrent
clients (the real `openai` client, 127.0.0.1), the batching gain (16-client over 1-client
throughput), and the same model's `Evaluator.generate` throughput for reference.

Prints ONE JSON line. The model is `configs/small.py`'s shape with random weights, saved as a
checkpoint and loaded with `Evaluator.from_checkpoint` as `msm serve` does. Prompts are random
token ids of one length (one prompt bucket) and every request is greedy with the same
max_tokens, so a few programs serve every wave; a warm-up round compiles them before timing.
Tokens are counted from each response's `usage` (a row may stop early at a stop token).

  .venv/bin/python benchmarks/serve.py
  .venv/bin/python benchmarks/serve.py --max-tokens 32 --requests-per-client 2
  .venv/bin/python benchmarks/serve.py --admit-ratio -1   # admit only between waves

Measured on the shared 2-core CPU (load average 4-15 from other jobs, so absolute numbers swing
up to 4x between runs; compare within a run). Output tokens/s at 1 / 4 / 16 clients, batching
gain, and serve at 16 clients over `Evaluator.generate` (16 rows) in the same run:

  admit 0.5 (default)  88 / 473 / 1141   gain 12.9   1.18   p50/p95 at 16: 1.02/1.19 s
  admit 0.5           367 / 1241 / 2713  gain 7.4    0.81
  admit 0.5           127 / 473 / 938    gain 7.4    1.91
  between waves only  202 / 604 / 1633   gain 8.1    0.73
  between waves only  167 / 650 / 1524   gain 9.2    0.77

At 16 clients a wave holds about 10 rows on average with admission between chunks, 8 without
(the clients split into two cohorts that alternate); the server reaches roughly the
throughput of `Evaluator.generate` on a full 16-row batch.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default=str(REPO / "configs" / "small.py"))
  p.add_argument("--prompt", type=int, default=32, help="prompt tokens per request")
  p.add_argument("--max-tokens", type=int, default=64)
  p.add_argument("--clients", default="1,4,16")
  p.add_argument("--requests-per-client", type=int, default=4)
  p.add_argument("--slots", type=int, default=16)
  p.add_argument("--admit-ratio", type=float, default=0.5,
                 help="engine.admit_ratio; a negative value admits only between waves")
  return p.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  import jax
  import numpy as np
  import openai
  import uvicorn

  from msm_jax.checkpoint import Checkpointer
  from msm_jax.config import load_config
  from msm_jax.data.sources import iter_texts
  from msm_jax.data.tokenizer import train_tokenizer
  from msm_jax.model import ModelDef
  from msm_jax.serve.cli import build

  cfg = load_config(args.config)
  model_def = ModelDef(cfg.model)
  tmp = tempfile.TemporaryDirectory()
  root = Path(tmp.name)
  texts = list(iter_texts(str(REPO / "data_pipelines/fixtures/pretrain.jsonl"), "documents",
                          "text"))
  tok = train_tokenizer(texts, root / "t.model", cfg.model.vocab_size)
  ckpt = Checkpointer(root / "bench" / "checkpoints", async_save=False)
  ckpt.save(0, {"params": jax.jit(model_def.init)(jax.random.PRNGKey(0))}, cfg, stage="pretrain",
            tokenizer=tok)
  ckpt.close()
  app, server = build(root / "bench", max_context=args.prompt + args.max_tokens,
                      slots=args.slots, max_queue=1024)
  ev = server.ev
  server.engine.admit_ratio = None if args.admit_ratio < 0 else args.admit_ratio
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  threading.Thread(target=uv.run, daemon=True).start()
  while not uv.started:
    time.sleep(0.05)
  client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused",
                         max_retries=0, timeout=600)
  rng = np.random.default_rng(0)
  levels = [int(c) for c in args.clients.split(",")]
  prompts = [rng.integers(4, tok.vocab_size, args.prompt).tolist()
             for _ in range(max(levels) * args.requests_per_client)]

  def one(ids):
    t = time.perf_counter()
    r = client.completions.create(model="bench", prompt=ids, max_tokens=args.max_tokens,
                                  temperature=0)
    return time.perf_counter() - t, r.usage.completion_tokens

  # Compile before timing: the first wave's program, and those of resumed waves (contexts of
  # the prompt plus some generated tokens: a few more prompt buckets).
  with cf.ThreadPoolExecutor(max(levels)) as pool:
    list(pool.map(one, prompts[:2 * max(levels)]))
  result = {"benchmark": "serve", "device": jax.devices()[0].platform,
            "devices": jax.device_count(), "model": Path(args.config).stem,
            "params": model_def.param_count(), "prompt": args.prompt,
            "max_tokens": args.max_tokens, "slots": server.engine.rows,
            "admit_ratio": server.engine.admit_ratio, "clients": {}}
  for c in levels:
    n = c * args.requests_per_client
    waves0, jobs0 = server.engine.stats["waves"], server.engine.stats["jobs"]
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(c) as pool:
      out = list(pool.map(one, prompts[:n]))
    secs = time.perf_counter() - t
    lat = np.asarray([o[0] for o in out])
    result["clients"][str(c)] = {
        "requests": n, "output_tokens": int(sum(o[1] for o in out)),
        "tokens_per_s": round(sum(o[1] for o in out) / secs, 1),
        "p50_latency_s": round(float(np.percentile(lat, 50)), 3),
        "p95_latency_s": round(float(np.percentile(lat, 95)), 3),
        "mean_rows_per_wave": round((server.engine.stats["jobs"] - jobs0)
                                    / max(1, server.engine.stats["waves"] - waves0), 2)}
  lo, hi = str(min(levels)), str(max(levels))
  result["batching_gain"] = round(result["clients"][hi]["tokens_per_s"]
                                  / result["clients"][lo]["tokens_per_s"], 2)
  batch = prompts[:args.slots]
  ev.generate(batch[:1], args.max_tokens, batch_size=args.slots)  # compile
  t = time.perf_counter()
  gens = ev.generate(batch, args.max_tokens, batch_size=args.slots)
  secs = time.perf_counter() - t
  result["evaluator_generate"] = {"rows": len(batch),
                                  "tokens_per_s": round(sum(len(g.tokens) for g in gens) / secs, 1)}
  result["serve_over_generate"] = round(result["clients"][hi]["tokens_per_s"]
                                        / result["evaluator_generate"]["tokens_per_s"], 2)
  uv.should_exit = True
  server.engine.close()
  tmp.cleanup()
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  main()
