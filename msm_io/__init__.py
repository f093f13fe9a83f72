"""The ground floor both `msm_jax` (training) and `data_pipelines` (generation) stand on: plain
file I/O with atomic writes, jsonl reading with file:line errors, content hashes. It imports
neither of them, nor jax (tests/test_layering.py checks)."""

from msm_io.files import (atomic_write_bytes, atomic_write_json, atomic_write_jsonl,
                          atomic_write_text, dumps_json, file_sha256, iter_jsonl, jsonl_text,
                          read_json, read_jsonl)

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_jsonl", "atomic_write_text",
           "dumps_json", "file_sha256", "iter_jsonl", "jsonl_text", "read_json", "read_jsonl"]
