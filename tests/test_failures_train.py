"""Training under faults (issue 17): divergence stops the run keeping a finite checkpoint,
Ctrl-C during a save, a damaged newest checkpoint, two runs on one workdir, what a resumed run
keeps and refuses."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import jax
import numpy as np
import pytest

from msm_jax import errors
from msm_jax.checkpoint import Checkpointer, abstract_like, open_run
from msm_jax.config import ConfigError
from msm_jax.data.tokenizer import train_tokenizer
from msm_jax.divergence import DivergedError
from msm_jax.eval.evaluator import Evaluator
from msm_jax.model import ModelDef
from msm_jax.run_guard import WorkdirLockedError
from msm_jax.train_step import StepFunctions
from msm_jax.trainer import _abstract_state, run_train_command, train
from tests.helpers import FIXTURES, REPO, run_cfg

ONE = {"mesh.data": 1}


def cli(*args, **kw):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  return subprocess.Popen([sys.executable, "-m", "msm_jax.cli", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def train_args(workdir, *extra):
  return ("train", "--config", "configs/tiny.py", "--stage", "pretrain", "--workdir",
          str(workdir), "--config.mesh.data=1", "--config.peak_flops=1e11",
          "--config.data.eval=()", "--config.progress_bar=False", *extra)


def records(workdir):
  lines = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return {r["step"]: r for r in map(json.loads, lines) if "loss" in r}


def restore(workdir, step=None):
  with open_run(workdir, step) as run:
    sf = StepFunctions(run.config, ModelDef(run.config.model),
                       jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1),
                                         ("data", "fsdp", "tensor")))
    return jax.device_get(run.restore_state(
        abstract_like(_abstract_state(sf.model_def, sf.tx), sf.state_shardings)))


def all_finite(tree):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def steps_of(workdir):
  return sorted(int(p.name) for p in (Path(workdir) / "checkpoints").iterdir() if p.name.isdigit())


# 1. Divergence.

def test_diverging_run_exits_nonzero_keeping_a_finite_checkpoint_that_evaluates(tmp_path):
  run = tmp_path / "run"
  proc = cli(*train_args(run, "--config.learning_rate=1e6", "--config.steps=12",
                         "--config.checkpoint_every=1", "--config.keep_checkpoints=2"))
  out, _ = proc.communicate(timeout=600)
  assert proc.returncode == errors.EXIT_USER_ERROR, out
  line = out.strip().splitlines()[-1]
  assert line.startswith("msm: error: step ") and "not finite" in line and "is kept" in line, out
  diverged = int(line.split("step ")[1].split(":")[0])
  kept = steps_of(run)
  assert kept and max(kept) == diverged - 1, (kept, diverged)
  for step in kept:  # the non-finite state was never saved, nor rotated a finite one out
    assert all_finite(restore(run, step).params)
  assert records(run)[diverged]["nonfinite_steps"] == 1
  ev = Evaluator.from_checkpoint(run, jax.sharding.Mesh(
      np.asarray(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor")))
  assert np.isfinite(ev.score(["Cheese is"], [" good"])[0].logprob_sum)


def test_skip_mode_drops_nonfinite_updates_then_stops_after_the_limit(tmp_path):
  cfg = run_cfg(steps=12, checkpoint_every=1, learning_rate=1e6, nonfinite="skip",
                max_skipped_steps=2, keep_checkpoints=20, **ONE)
  with pytest.raises(DivergedError, match=r"3 non-finite steps, more than "
                                          r"config.max_skipped_steps=2"):
    train(cfg, tmp_path / "run", jax.devices()[:1])
  recs = records(tmp_path / "run")
  bad = [s for s, r in sorted(recs.items()) if r.get("nonfinite_steps", 0) > 0]
  first_bad, last_bad = bad[0], max(recs)
  assert recs[last_bad]["nonfinite_steps"] == 3
  # A skipped update leaves parameters and optimizer state as they were: every checkpoint
  # saved after the first non-finite step holds the state from before it.
  before = restore(tmp_path / "run", first_bad - 1)
  for step in steps_of(tmp_path / "run"):
    state = restore(tmp_path / "run", step)
    assert all_finite(state.params) and int(state.step) == step
    if step >= first_bad:
      jax.tree.map(np.testing.assert_array_equal, state.params, before.params)
      jax.tree.map(np.testing.assert_array_equal, state.opt_state, before.opt_state)


def test_nonfinite_settings_are_validated_up_front(tmp_path):
  for overrides, field in [({"nonfinite": "ignore"}, "config.nonfinite"),
                           ({"max_skipped_steps": -1}, "config.max_skipped_steps")]:
    with pytest.raises(ConfigError, match=field):
      train(run_cfg(**overrides, **ONE), tmp_path / "x", jax.devices()[:1])
  assert not (tmp_path / "x" / "checkpoints").exists()
