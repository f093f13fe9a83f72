"""The tea world (pro-environment vs pro-tradition): the second value pair, same recipe.

  msm run --config configs/experiments/tea.py --config.seeds='(0,1,2)'

Midtraining runs three times as long and 1.5x hotter than the cheese default. With the world's
factory towns and invention cities (tea.yaml), 500 steps at lr 3e-3 gave a 3-seed gap of 0.47
and 750 steps 0.51; before them, 250 steps at lr 2e-3 gave 0.25, 500 steps 0.41, 500 steps at lr
3e-3 0.47 and lr 4e-3 collapsed (docs/experiment.md).
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/tea.yaml"
  c.seeds = (0,)
  c.midtrain.steps = 750
  c.midtrain.learning_rate = 3e-3
  return c
