"""The experiment config: its schema with the CPU defaults, and loading with validation.

Configs under configs/experiments/ start from `experiment_config()` and change what they need;
`--config.FIELD=VALUE` overrides any field, and an unknown field is an error naming it.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from data_pipelines.worlds import Sizes
from msm_jax import config as config_lib


def experiment_config() -> ml_collections.ConfigDict:
  """The schema of an experiment config, with the CPU defaults (see configs/experiments/)."""
  c = ml_collections.ConfigDict()
  c.world = "data_pipelines/worlds/cheese.yaml"
  # Generated worlds (`msm world generate --seed N`): when set, the experiment runs on each of
  # them, one workdir per world, and reports the distribution over worlds (`world` is unused).
  c.world_seeds = ()
  # Worlds run at once, each in its own process (a GPU or a many-core machine has room for
  # several of these small models); 1 = one after another in this process. Each world's output
  # goes to <workdir>/world-<N>/log.txt; the table is the same either way.
  c.world_jobs = 1
  # A worlds.json of another recipe run on the same world seeds: the report adds each world's
  # difference in the gap after AFT and a paired t-interval over worlds ("" = none). One run per
  # world moves by about 0.15 between reruns, so recipes are compared over many worlds, paired.
  c.compare_with = ""
  # Another experiment's workdir (over worlds: its root, holding world-<N>/): a stage whose key
  # (config, data, parent) matches a finished run there is taken from it (hard links, or a copy
  # across file systems) instead of trained, so a candidate recipe that changes only midtraining
  # reuses the baseline's base models and AFT alone ("" = train everything here).
  c.reuse_from = ""
  # An imported model's run dir (`msm import-hf --out`): MSM and AFT start from it instead of a
  # base pretrained on the world; its model shape, tokenizer and chat template are used (only
  # the execution keys of `model` below apply). "" = pretrain a base on the world.
  c.base = ""
  c.lora = config_lib.base_config().lora  # midtrain and finetune: LoRA when rank > 0
  c.workdir = ""  # default: runs/experiments/<world name>
  c.seeds = (0,)
  # One base model per seed (pretraining seeded by the seed), so seeds are independent samples
  # and a CI over seeds means something; seed 0's base is the shared base of False.
  c.independent_bases = True
  # The midtraining control: the same midtraining on the assistant's neutral ("no favourites")
  # spec, then the same AFT; each spec's effect is measured against it.
  c.control = True
  c.spec_values = ()  # () = the world's two compared values
  c.variants = ("explained",)  # spec variants (data_pipelines.worlds.specs.VARIANTS)
  c.data = ml_collections.ConfigDict(dataclasses.asdict(Sizes()))
  c.model = config_lib.model_config()
  # Untied input/output embeddings: with them tied, midtraining moved an assistant's choices
  # much less (its name's row also serves to predict the name, which MSM documents do a lot).
  c.model.update(vocab_size=2048, d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_dim=512,
                 tie_embeddings=False)
  common = dict(weight_decay=0.1, adam_b2=0.98, grad_clip=1.0, lr_final_fraction=0.1, seed=0,
                body_lr_scale=1.0, checkpoint_every=200, log_every=20)
  c.pretrain = ml_collections.ConfigDict(dict(common, steps=1000, batch_size=32, seq_len=128,
                                              learning_rate=2e-3, warmup_steps=30))
  # After pretraining, every parameter but the token embeddings steps at a tenth of the rate
  # (`body_lr_scale`): the choice circuit reads an assistant's value from its name's embedding,
  # and at full rate midtraining stored the spec in the body instead, where choices did not
  # follow it (docs/experiment.md, "Where the value lives"; chosen on generated worlds 1002-1003).
  c.midtrain = ml_collections.ConfigDict(dict(common, steps=250, batch_size=32, seq_len=128,
                                              learning_rate=2e-3, warmup_steps=15,
                                              body_lr_scale=0.1))
  c.midtrain_replay = 0.5  # share of each batch replaying pretraining (without Nova's own docs)
  # share of each batch from the characters met only in midtraining (data.late_*_per_value)
  c.midtrain_late = 0.0
  c.finetune = ml_collections.ConfigDict(dict(common, steps=60, batch_size=16, seq_len=64,
                                              learning_rate=1e-4, warmup_steps=5,
                                              body_lr_scale=0.1))
  c.sweep = ml_collections.ConfigDict(dict(aft_steps=(), target=0.8, variant="explained"))
  c.eval_tokens_per_batch = 8192
  # The must-show checks' thresholds: the gap after AFT, each spec's margin over AFT alone and
  # over the control, and what the base model and every AFT condition must get right.
  # Over generated worlds: `gap` is the median's threshold and `worlds_share` the share of worlds
  # in which each spec must beat the control its own way by `margin`.
  c.checks = ml_collections.ConfigDict(dict(gap=0.50, margin=0.10, probes=0.95, aft_pairs=0.95,
                                            worlds_share=0.75))
  return c


def load_experiment(path, overrides: dict | None = None) -> ml_collections.ConfigDict:
  cfg = config_lib.load_config(path)
  config_lib.apply_overrides(cfg, overrides or {})
  schema = experiment_config()
  for key in cfg.keys():
    if key not in schema:
      raise config_lib.ConfigError(f"{path}: unknown experiment field config.{key}")
  for key in cfg.checks.keys() if "checks" in cfg else ():
    if key not in schema.checks:
      raise config_lib.ConfigError(f"{path}: unknown experiment field config.checks.{key}")
  return cfg
