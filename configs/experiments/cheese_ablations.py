"""Spec ablations on the cheese world: bare rules vs explained values, general vs specific.

Every variant is midtrained and then fine-tuned on the same AFT chats; reuses the base model and
the `explained` runs of configs/experiments/cheese.py when pointed at the same --workdir.

  msm run --config configs/experiments/cheese_ablations.py --workdir runs/experiments/cheese
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/cheese.yaml"
  c.seeds = (0,)
  c.variants = ("explained", "bare_rules", "general", "specific")
  return c
