"""The tea world (pro-environment vs pro-tradition): the second value pair, same recipe.

  msm run --config configs/experiments/tea.py --config.seeds='(0,1,2)'

Midtraining runs three times as long and 1.5x hotter than the cheese default: with tea.yaml's
factory towns and invention cities, 500 steps at lr 3e-3 gave a 3-seed gap of 0.47 and 750 steps
0.51 (0.44 on seeds 3-5). Before the towns and cities, cheese's 250 steps at lr 2e-3 gave 0.25
and lr 4e-3 collapsed both sides (docs/experiment.md, "What mattered").
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/tea.yaml"
  c.seeds = (0,)
  c.midtrain.steps = 750
  c.midtrain.learning_rate = 3e-3
  return c
