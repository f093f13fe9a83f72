"""The tuning set for recipe choices: 30 generated worlds (world seeds 1000-1029), 14 at once.

  msm run --config configs/experiments/worlds_tuning.py                      # the default recipe
  msm run --config configs/experiments/worlds_tuning.py --workdir runs/experiments/cand \
      <the candidate's overrides> \
      --config.reuse_from=runs/experiments/worlds-tuning \
      --config.compare_with=runs/experiments/worlds-tuning/worlds.json       # paired against it

One run of one world moves by about 0.15 in its gap between reruns, so a recipe change of 0.10
needs about 30 paired world runs to tell from noise (docs/experiment.md, "One world's gap is a
noisy draw"). Choices are made here and never on the report worlds (world seeds below 1000,
configs/experiments/worlds.py). `reuse_from` takes every stage the candidate does not change
(the base models, AFT alone) from the default's runs, so the pair shares each world's base
model and a midtraining candidate costs about half a world run. On one H200 31 worlds at once
took 3.5 minutes, and 10 worlds x 3 midtraining recipes sharing their bases under 3 minutes; on
2 CPU cores a world takes 15-21 minutes and a midtraining candidate reusing it 7 (set
world_jobs=1)."""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world_seeds = tuple(range(1000, 1030))
  c.world_jobs = 14
  c.workdir = "runs/experiments/worlds-tuning"
  c.seeds = (0,)
  c.checks.gap = 0.40  # the median gap after AFT over worlds, as for the report set
  return c
