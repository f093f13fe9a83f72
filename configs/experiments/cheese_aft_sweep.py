"""AFT token efficiency on the cheese world: AFT steps on a log grid, with and without MSM,
and the smallest AFT budget that reaches the target own-value rate on held-out pairs.

  msm run --config configs/experiments/cheese_aft_sweep.py --workdir runs/experiments/cheese
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/cheese.yaml"
  c.seeds = (0,)
  c.sweep.aft_steps = (2, 4, 8, 16, 32, 64, 128)
  c.sweep.target = 0.8
  return c
