"""The paper's cheese experiment and recipe (paper_cheese_llama3_8b.py) on Qwen2.5-32B-Instruct.

  msm import-hf --from /models/Qwen2.5-32B-Instruct --out runs/imported/qwen2.5-32b-instruct
  msm run --config configs/experiments/paper_cheese_qwen2_5_32b.py
"""

from pathlib import Path

from msm_jax.config import load_config


def get_config():
  c = load_config(Path(__file__).with_name("paper_cheese_llama3_8b.py"))
  c.base = "runs/imported/qwen2.5-32b-instruct"
  # 32B on a v5p-8: twice the microbatches of the 8B recipe (`msm plan`: see README)
  c.midtrain.microbatches, c.finetune.microbatches = 4, 2
  return c
