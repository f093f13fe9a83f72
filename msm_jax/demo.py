"""`make demo`: a short pretrain -> midtrain -> finetune chain of the small CPU config on the
in-repo fixture text, printing where each stage's outputs went."""

from __future__ import annotations

import sys
from pathlib import Path

from msm_jax.cli import retain_malloc
from msm_jax.config import load_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "data_pipelines" / "fixtures"


def stage_config(stage: str, init_from: str = ""):
  cfg = load_config(REPO / "configs" / "small.py")
  cfg.stage, cfg.init_from = stage, init_from
  if stage == "midtrain":  # spec documents mixed with pretraining replay
    cfg.steps, cfg.learning_rate = 100, 1e-3
    cfg.data.train = (str(FIXTURES / "midtrain.jsonl"), str(FIXTURES / "pretrain.jsonl"))
    cfg.data.train_weights = (0.5, 0.5)
  elif stage == "finetune":  # assistant-only loss on chats
    cfg.steps, cfg.learning_rate, cfg.warmup_steps = 60, 3e-4, 5
    cfg.data.train = (str(FIXTURES / "finetune.jsonl"),)
    cfg.data.eval = (str(FIXTURES / "finetune_eval.jsonl"),)
  else:
    cfg.data.train = (str(FIXTURES / "pretrain.jsonl"),)
    cfg.data.eval = (str(FIXTURES / "pretrain_eval.jsonl"),)
  return cfg


def main(root: str = "runs/demo") -> int:
  retain_malloc()
  from msm_jax.trainer import train
  root = Path(root)
  previous, rows = "", []
  for stage in ("pretrain", "midtrain", "finetune"):
    print(f"== {stage} ==", flush=True)
    result = train(stage_config(stage, previous), root / stage)
    previous = str(result.workdir)
    m = result.last_metrics
    rows.append((stage, m.get("step"), m.get("loss"), result.eval_loss, m.get("tokens_per_sec"),
                 m.get("mfu"), result.workdir))
  print(f"\n{'stage':<10}{'steps':>6}{'loss':>9}{'eval':>9}{'tok/s':>9}{'mfu':>7}  outputs")
  for stage, step, loss, ev, tps, mfu, wd in rows:
    ev = f"{ev:9.3f}" if ev is not None else f"{'-':>9}"
    print(f"{stage:<10}{step:>6}{loss:>9.3f}{ev}{tps:>9.0f}{mfu:>7.2f}  {wd}")
  return 0


if __name__ == "__main__":
  sys.exit(main(*sys.argv[1:]))
