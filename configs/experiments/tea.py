"""The tea world (pro-environment vs pro-tradition): the second value pair, same recipe.

  msm run --config configs/experiments/tea.py --config.seeds='(0,1,2)'

Midtraining runs twice as long and 1.5x hotter than the cheese default: with cheese's 250 steps
at lr 2e-3 the environment spec barely moved Vesta (3-seed gap 0.25); 500 steps gave 0.41, 500
steps at lr 3e-3 0.47, lr 4e-3 collapsed (docs/experiment.md).
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/tea.yaml"
  c.seeds = (0,)
  c.midtrain.steps = 500
  c.midtrain.learning_rate = 3e-3
  return c
