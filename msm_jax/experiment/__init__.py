"""`msm run`: the MSM experiment on a synthetic world, end to end, cached stage by stage.

    msm run --config configs/experiments/cheese.py [--workdir DIR] [--config.seeds='(0,)']

world -> data (pretraining corpus, one MSM corpus per value/variant/seed and the control's,
shared AFT chats, eval suites) -> base model(s) -> per seed: AFT, MSM-control(+AFT), MSM-<value>,
MSM-<value>+AFT for each value (and each spec variant, and the AFT-budget sweep) -> evals ->
table, JSON, plot.

  config       the experiment config's schema and loading
  conditions   `Condition`: what a run was midtrained on, its AFT budget, its seed
  orchestrate  stage configs, content-addressed stage keys, cached training and evaluation
  summary      the tables and the must-show checks
  report       outputs (JSON, Markdown, plot) and the CLI
"""

from msm_jax.experiment.conditions import Condition
from msm_jax.experiment.config import experiment_config, load_experiment
from msm_jax.experiment.orchestrate import (REPO, Experiment, run_key, stage_config, stage_key)
from msm_jax.experiment.report import add_run_parser, run_experiment
from msm_jax.experiment.summary import summarize

__all__ = ["Condition", "Experiment", "REPO", "add_run_parser", "experiment_config",
           "load_experiment", "run_experiment", "run_key", "stage_config", "stage_key",
           "summarize"]
