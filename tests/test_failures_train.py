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


# 2. Checkpoints: damaged steps, Ctrl-C, the workdir lock, what a resume keeps and refuses.

def _largest_data_file(step_dir):
  return max((step_dir / "state").rglob("d/*"), key=lambda p: p.stat().st_size)


def test_damaged_newest_steps_fall_back_with_identical_losses_and_tokens_seen(tmp_path, capsys):
  straight, run = tmp_path / "straight", tmp_path / "run"
  train(run_cfg(steps=8, checkpoint_every=2, **ONE), straight, jax.devices()[:1])
  train(run_cfg(steps=6, checkpoint_every=2, **ONE), run, jax.devices()[:1])
  assert steps_of(run) == [2, 4, 6]
  _largest_data_file(run / "checkpoints" / "6").unlink()  # a missing file
  truncated = _largest_data_file(run / "checkpoints" / "4")  # a truncated one
  truncated.write_bytes(truncated.read_bytes()[:truncated.stat().st_size // 2])
  capsys.readouterr()
  result = train(run_cfg(steps=8, checkpoint_every=2, **ONE), run, jax.devices()[:1])
  err = capsys.readouterr().err
  skipped = [line for line in err.splitlines() if "skipped, it does not restore" in line]
  assert len(skipped) == 2, err
  assert "checkpoints/6: skipped" in skipped[0] and "checkpoints/4: skipped" in skipped[1]
  assert "resuming from step 2" in err
  assert sorted(p.name for p in (run / "checkpoints.damaged").iterdir()) == ["4", "6"]
  a, b = records(straight), records(run)
  assert sorted(b) == list(range(1, 9))
  for step in range(3, 9):  # continued from step 2 exactly, tokens_seen counting on
    assert b[step]["loss"] == a[step]["loss"], step
    assert b[step]["tokens_seen"] == a[step]["tokens_seen"], step
  with open_run(run) as last:
    assert last.meta["tokens_seen"] == a[8]["tokens_seen"]
  jax.tree.map(np.testing.assert_array_equal, restore(run).params, restore(straight).params)
  assert result.last_metrics["tokens_seen"] == a[8]["tokens_seen"]


def test_sigint_during_saves_leaves_a_restorable_checkpoint(tmp_path):
  run = tmp_path / "run"
  proc = cli(*train_args(run, "--config.steps=100000", "--config.checkpoint_every=1"))
  deadline = time.time() + 300
  while not (run / "checkpoints" / "3").exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 130, out
  assert out.strip().splitlines()[-1].startswith("msm: interrupted"), out
  assert "cannot schedule new futures" not in out and "Traceback" not in out, out
  left = [p.name for p in (run / "checkpoints").iterdir() if not p.name.isdigit()]
  assert not left, left  # the save in flight was completed, not left half-written
  assert steps_of(run)[-1] >= 3
  assert all_finite(restore(run).params)


def _hold_lock(workdir):
  code = ("import sys, time; from msm_jax.run_guard import WorkdirLock\n"
          f"with WorkdirLock({str(workdir)!r}):\n  print('held', flush=True); time.sleep(600)")
  proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_run_on_a_locked_workdir_fails_naming_the_holder_and_a_stale_lock_is_taken(
    tmp_path, capsys):
  run = tmp_path / "run"
  run.mkdir()
  holder = _hold_lock(run)
  try:
    second = cli(*train_args(run, "--config.steps=2"))
    out, _ = second.communicate(timeout=300)
    assert second.returncode == errors.EXIT_USER_ERROR, out
    assert f"pid {holder.pid} on host {socket.gethostname()}" in out.strip().splitlines()[-1]
    assert not (run / "checkpoints").exists()
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # The holder died without releasing it: the next run takes the lock over, saying so.
  train(run_cfg(steps=1, **ONE), run, jax.devices()[:1])
  assert f"stale lock of pid {holder.pid}" in capsys.readouterr().err
  assert steps_of(run) == [1]


def test_resume_refuses_another_stage_model_or_tokenizer_naming_the_field(tmp_path):
  run = tmp_path / "run"
  train(run_cfg(steps=2, checkpoint_every=2, **ONE), run, jax.devices()[:1])
  other_tok = tmp_path / "other.model"
  train_tokenizer([f"entirely different words number {i} zebra quartz" for i in range(200)],
                  other_tok, vocab_size=400)
  cases = [(run_cfg("midtrain", steps=4, **ONE), r"--stage midtrain: this workdir holds a "
                                                 r"pretrain run"),
           (run_cfg(steps=4, **{"model.mlp_dim": 128}, **ONE), r"config\.model\.mlp_dim: 128"),
           (run_cfg(steps=4, **{"data.tokenizer": str(other_tok)}, **ONE),
            r"config\.data\.tokenizer: .*other\.model differs")]
  for cfg, message in cases:
    with pytest.raises(ConfigError, match=message):
      train(cfg, run, jax.devices()[:1])
  assert steps_of(run) == [2]


# 3. The train command's summary line.

def test_train_command_reports_a_null_last_loss(tmp_path, capsys):
  run = tmp_path / "run"
  overrides = {"steps": "2", "checkpoint_every": "2", "mesh.data": "-1", "data.eval": "()",
               "data.train": repr((str(FIXTURES / "pretrain.jsonl"),)), "peak_flops": "1e11",
               "progress_bar": "False"}
  args = Namespace(distributed=False, config=str(REPO / "configs" / "tiny.py"),
                   stage="pretrain", workdir=str(run), config_overrides=overrides)
  assert run_train_command(args) == 0
  lines = (run / "metrics.jsonl").read_text().splitlines()
  last = json.loads(lines[-1])
  last["loss"] = None  # what a diverged (skipped) last step logs
  (run / "metrics.jsonl").write_text("\n".join(lines[:-1] + [json.dumps(last)]) + "\n")
  capsys.readouterr()
  assert run_train_command(args) == 0  # a rerun of the finished run reports it
  assert "pretrain: step 2 loss n/a" in capsys.readouterr().out
