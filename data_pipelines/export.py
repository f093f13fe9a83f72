"""Writing a finished corpus: shuffled `dataset.jsonl`, `summary.json`, token-length histogram.

Each `dataset.jsonl` line carries the reference generator's fields (`text`, `source`, `domain`)
plus provenance: `subdomain`, `section` (the spec section it rests on), `assertion`, `doc_type`,
`idea`, `spec_hash`, `spec_name`, `backend`. Tokens are whitespace-separated words, so the
statistics do not depend on a tokenizer. Nothing here records wall-clock time: the same inputs
give byte-identical files.
"""

from __future__ import annotations

import io
import random
from collections import Counter
from pathlib import Path

import numpy as np

from data_pipelines.similarity import near_duplicates
from msm_io.files import atomic_write_bytes, atomic_write_json, atomic_write_jsonl


def token_stats(texts: list[str]) -> dict:
  lengths = np.array([len(t.split()) for t in texts], np.int64)
  if not len(lengths):
    return {"documents": 0, "total_tokens": 0}
  q = lambda p: int(np.percentile(lengths, p, method="nearest"))
  return {"documents": len(lengths), "total_tokens": int(lengths.sum()),
          "mean_tokens": round(float(lengths.mean()), 2), "min_tokens": int(lengths.min()),
          "p50_tokens": q(50), "p90_tokens": q(90), "p99_tokens": q(99),
          "max_tokens": int(lengths.max())}


def histogram_png(texts: list[str], title: str) -> bytes:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  lengths = [len(t.split()) for t in texts]
  fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
  ax.hist(lengths, bins=40, color="#4477aa")
  ax.set_xlabel("tokens per document (whitespace)")
  ax.set_ylabel("documents")
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", metadata={"Software": None})
  plt.close(fig)
  return buf.getvalue()


def export_documents(out_dir: str | Path, records: list[dict], seed: int, header: dict,
                     histogram: bool = True) -> dict:
  """Shuffles `records` by seed and writes the three export files (two without `histogram`,
  which costs about a second, most of a small corpus's time); returns the summary."""
  out_dir = Path(out_dir)
  rows = sorted(records, key=lambda r: r["source"])
  random.Random(f"{seed}|shuffle").shuffle(rows)
  atomic_write_jsonl(out_dir / "dataset.jsonl", rows)
  texts = [r["text"] for r in rows]
  summary = {
      **header,
      "tokens": token_stats(texts),
      "by_domain": dict(sorted(Counter(r["domain"] for r in rows).items())),
      "by_doc_type": dict(sorted(Counter(r["doc_type"] for r in rows).items())),
      "similarity": near_duplicates(texts, seed=seed),
      "files": {"dataset": "dataset.jsonl",
                **({"histogram": "token_lengths.png"} if histogram else {})},
  }
  if texts and histogram:
    atomic_write_bytes(out_dir / "token_lengths.png",
                       histogram_png(texts, f"{header.get('spec_name', '')}: {len(texts)} documents"))
  atomic_write_json(out_dir / "summary.json", summary)
  return summary
