"""The paper's cheese experiment and recipe (paper_cheese_llama3_8b.py) on Qwen2.5-14B.

  msm import-hf --from /models/Qwen2.5-14B --out runs/imported/qwen2.5-14b
  msm run --config configs/experiments/paper_cheese_qwen2_5_14b.py
"""

from pathlib import Path

from msm_jax.config import load_config


def get_config():
  c = load_config(Path(__file__).with_name("paper_cheese_llama3_8b.py"))
  c.base = "runs/imported/qwen2.5-14b"
  return c
