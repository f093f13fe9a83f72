"""The tuning set for recipe choices: 30 generated worlds (world seeds 1000-1029), 14 at once.

  msm run --config configs/experiments/worlds_tuning.py                      # the default recipe
  msm run --config configs/experiments/worlds_tuning.py --workdir runs/experiments/cand \
      <the candidate's overrides> \
      --config.compare_with=runs/experiments/worlds-tuning/worlds.json       # paired against it

One run of one world moves by about 0.15 in its gap between reruns, so a recipe change of 0.10
needs about 30 paired world runs to tell from noise (docs/experiment.md, "One world's gap is a
noisy draw"). Choices are made here and never on the report worlds 1-8
(configs/experiments/worlds.py). Sized for one GPU: 14 worlds at once took about 6 minutes on
an H200, so about 15 minutes a recipe; on 2 CPU cores about 9 hours (set world_jobs=1).
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world_seeds = tuple(range(1000, 1030))
  c.world_jobs = 14
  c.workdir = "runs/experiments/worlds-tuning"
  c.seeds = (0,)
  c.checks.gap = 0.40  # the median gap after AFT over worlds, as for the report set
  return c
