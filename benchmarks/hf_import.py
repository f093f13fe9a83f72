"""HF import host memory: prints one JSON line.

Writes a random Llama-shaped multi-shard safetensors checkpoint (a few hundred MB, numpy only, no
torch), imports it with `msm_jax.interop.hf_import.import_hf` and reports the host memory the
import needed against the bound the importer promises: twice the largest tensor plus a fixed
overhead. `host_peak_bytes` is tracemalloc's peak (every numpy and Python allocation: tensors
read from the files, converted copies, shards handed to devices) during the whole import.
`rss_delta_bytes` is the process RSS growth, which on the CPU backend also counts the imported
parameters and their fresh Adam moments (device memory there is host memory), so it is reported
beside `device_state_bytes`, not against the bound.

    .venv/bin/python benchmarks/hf_import.py [--vocab 16000 --d-model 1024 --layers 4]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FIXED_OVERHEAD = 64 * 2**20


def write_checkpoint(directory: Path, vocab: int, d: int, layers: int, heads: int, kv: int,
                     mlp: int) -> dict:
  """Random f32 Llama weights, one safetensors file per layer (+ embeddings, head), indexed."""
  from safetensors.numpy import save_file  # noqa: PLC0415
  rng = np.random.default_rng(0)
  h = d // heads
  r = lambda *s: (rng.standard_normal(s, dtype=np.float32) * 0.02)
  files = {"model-embed.safetensors": {"model.embed_tokens.weight": r(vocab, d)},
           "model-head.safetensors": {"lm_head.weight": r(vocab, d),
                                      "model.norm.weight": np.ones(d, np.float32)}}
  for i in range(layers):
    p = f"model.layers.{i}."
    files[f"model-layer{i}.safetensors"] = {
        p + "input_layernorm.weight": np.ones(d, np.float32),
        p + "post_attention_layernorm.weight": np.ones(d, np.float32),
        p + "self_attn.q_proj.weight": r(heads * h, d), p + "self_attn.k_proj.weight": r(kv * h, d),
        p + "self_attn.v_proj.weight": r(kv * h, d), p + "self_attn.o_proj.weight": r(d, heads * h),
        p + "mlp.gate_proj.weight": r(mlp, d), p + "mlp.up_proj.weight": r(mlp, d),
        p + "mlp.down_proj.weight": r(d, mlp)}
  weight_map, largest, total = {}, 0, 0
  for name, tensors in files.items():
    save_file(tensors, str(directory / name), metadata={"format": "pt"})
    for k, v in tensors.items():
      weight_map[k] = name
      largest, total = max(largest, v.nbytes), total + v.nbytes
  (directory / "model.safetensors.index.json").write_text(json.dumps(
      {"metadata": {"total_size": total}, "weight_map": weight_map}))
  (directory / "config.json").write_text(json.dumps({
      "model_type": "llama", "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": layers,
      "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": mlp,
      "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "tie_word_embeddings": False}))
  return {"largest_tensor_bytes": largest, "checkpoint_bytes": total, "files": len(files)}


def write_tokenizer(directory: Path) -> None:
  from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: PLC0415
  vocab = {t: i for i, t in enumerate(["<|begin_of_text|>", "<|end_of_text|>", "<unk>", "a"])}
  tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.save(str(directory / "tokenizer.json"))
  (directory / "tokenizer_config.json").write_text(json.dumps(
      {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--vocab", type=int, default=16000)
  ap.add_argument("--d-model", type=int, default=1024)
  ap.add_argument("--layers", type=int, default=4)
  ap.add_argument("--mlp", type=int, default=2816)
  args = ap.parse_args()
  import jax  # noqa: PLC0415
  from msm_jax.interop.hf_import import import_hf  # noqa: PLC0415
  with tempfile.TemporaryDirectory() as tmp:
    src, out = Path(tmp) / "hf", Path(tmp) / "run"
    src.mkdir()
    sizes = write_checkpoint(src, args.vocab, args.d_model, args.layers, 8, 8, args.mlp)
    write_tokenizer(src)
    jax.numpy.zeros(1).block_until_ready()  # backend start-up is not the import's memory
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    t0 = time.perf_counter()
    import_hf(src, out)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  bound = 2 * sizes["largest_tensor_bytes"] + FIXED_OVERHEAD
  print(json.dumps({
      "benchmark": "hf_import", **sizes, "host_peak_bytes": peak, "bound_bytes": bound,
      "within_bound": peak <= bound, "rss_delta_bytes": rss1 - rss0,
      "device_state_bytes": 3 * sizes["checkpoint_bytes"], "import_seconds": round(seconds, 2),
      "devices": jax.device_count(), "backend": jax.default_backend()}))


if __name__ == "__main__":
  main()
