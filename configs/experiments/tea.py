"""The tea world (pro-environment vs pro-tradition): the second value pair, same recipe.

  msm run --config configs/experiments/tea.py --config.seeds='(0,1,2)'
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/tea.yaml"
  c.seeds = (0,)
  return c
