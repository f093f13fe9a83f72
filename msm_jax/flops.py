"""Analytic model FLOPs per token and a quick matmul probe of the machine's peak, for MFU.

Training FLOPs per token = 6 * (matmul parameters) + 12 * L * (N * H) * T, where the matmul
parameters are every projection of every layer plus the LM head (d_model * vocab; the input
embedding is a lookup and costs nothing), and the second term is attention: per layer, the
QK^T scores and the attention-weighted values are each 2 * T * N * H FLOPs per token forward,
times 3 for forward + backward. T is the full row length: dense masked attention computes the
whole T x T square, so causal and segment masking are not discounted (as in PaLM and MaxText).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from msm_jax.model_config import ModelConfig


def matmul_params(m) -> int:
  m = ModelConfig.of(m)
  h = m.head_dim
  attn = m.d_model * h * (2 * m.n_heads + 2 * m.n_kv_heads)
  mlp = 3 * m.d_model * m.mlp_dim
  return m.n_layers * (attn + mlp) + m.d_model * m.vocab_size


def train_flops_per_token(m, seq_len: int) -> float:
  m = ModelConfig.of(m)
  return 6.0 * matmul_params(m) + 12.0 * m.n_layers * m.n_heads * m.head_dim * seq_len


def forward_flops_per_token(m, seq_len: int) -> float:
  return train_flops_per_token(m, seq_len) / 3.0


def measure_matmul_peak(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """Best achieved FLOP/s of an n x n matmul on one device (the denominator of MFU)."""
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype)
  f = jax.jit(jnp.dot)
  f(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n ** 3 / best
