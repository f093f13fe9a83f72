"""The tea world (pro-environment vs pro-tradition): the second value pair, the default recipe.

  msm run --config configs/experiments/tea.py --config.seeds='(3,4,5)'

The default recipe was chosen on generated worlds, never on tea, so tea is out-of-sample for it.
The tea tables in docs/experiment.md were made with the earlier, per-world-tuned recipe (750
midtraining steps at lr 3e-3, the body at the full rate); to reproduce them add
--config.midtrain.steps=750 --config.midtrain.learning_rate=3e-3
--config.midtrain.body_lr_scale=1.0 --config.finetune.body_lr_scale=1.0.
"""

from msm_jax.experiment import experiment_config


def get_config():
  c = experiment_config()
  c.world = "data_pipelines/worlds/tea.yaml"
  c.seeds = (0,)
  return c
