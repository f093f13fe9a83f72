"""The cheese world (pro-America vs pro-affordability), at the CPU default: what `make demo` runs.

  msm run --config configs/experiments/cheese.py                        # 1 seed, all conditions
  msm run --config configs/experiments/cheese.py --config.seeds='(0,1,2)'  # the 3-seed table
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/cheese.yaml"
  c.seeds = (0,)
  return c
