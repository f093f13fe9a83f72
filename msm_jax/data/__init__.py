"""Tokenizer, chat templates, corpus readers and the Grain input pipeline.

The pipeline (which imports grain and jax) loads on first use, so `msm --help` stays quick.
"""

from msm_jax.data.chat import end_of_turn_id, render_chat, render_prompt
from msm_jax.data.tokenizer import Tokenizer, load_tokenizer_bytes, train_tokenizer

_LAZY = {
    "build_tokenizer": "msm_jax.data.pipeline",
    "make_train_iterator": "msm_jax.data.pipeline",
    "make_eval_batches": "msm_jax.data.pipeline",
}

__all__ = ["Tokenizer", "load_tokenizer_bytes", "train_tokenizer", "render_chat", "render_prompt",
           "end_of_turn_id", *_LAZY]


def __getattr__(name):
  if name in _LAZY:
    import importlib
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'msm_jax.data' has no attribute {name!r}")
