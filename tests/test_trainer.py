"""The training loop end to end: resume after SIGKILL, SIGTERM, midtrain -> finetune handoff,
checkpoints across meshes, config errors, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from msm_jax import config as config_lib
from msm_jax import sharding as shd
from msm_jax.checkpoint import CheckpointError, Checkpointer, abstract_like, open_run
from msm_jax.model import ModelDef
from msm_jax.train_step import StepFunctions
from msm_jax.trainer import _abstract_state, _init_from, train
from tests.helpers import REPO, run_cfg, tiny_cfg


def msm(*args, env=None, **kw):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", **(env or {})}
  return subprocess.Popen([sys.executable, "-m", "msm_jax.cli", *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def losses(workdir):
  out = {}
  for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if "loss" in r:
      out[r["step"]] = r["loss"]
  return out


def final_params(workdir, cfg):
  mesh = shd.make_mesh(cfg, jax.devices()[:1])
  sf = StepFunctions(cfg, ModelDef(cfg.model), mesh)
  with open_run(workdir) as run:
    state = run.restore_state(abstract_like(_abstract_state(sf.model_def, sf.tx),
                                            sf.state_shardings))
  return jax.device_get(state.params)


def train_args(workdir, steps, every):
  return ("train", "--config", "configs/tiny.py", "--stage", "pretrain", "--workdir", str(workdir),
          f"--config.steps={steps}", f"--config.checkpoint_every={every}",
          "--config.mesh.data=1", "--config.peak_flops=1e11", "--config.data.eval=()")


def test_resume_after_sigkill_continues_exactly(tmp_path):
  n = 100
  # every compiled program kept on disk, so the resumed run takes its programs from the cache
  xla = {"MSM_XLA_CACHE": str(tmp_path / "xla"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  straight = msm(*train_args(tmp_path / "straight", 2 * n, n), env=xla)
  killed = msm(*train_args(tmp_path / "killed", 2 * n, n), env=xla)
  ckpt_n = tmp_path / "killed" / "checkpoints" / str(n)
  deadline = time.time() + 300
  while not ckpt_n.exists() and killed.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert ckpt_n.exists(), killed.stdout.read()
  assert not (tmp_path / "killed" / "checkpoints" / str(2 * n)).exists(), "killed too late"
  assert straight.wait() == 0, straight.stdout.read()
  cached = set((tmp_path / "xla").iterdir())
  assert any("train" in p.name or "step" in p.name for p in cached), sorted(cached)
  resumed = msm(*train_args(tmp_path / "killed", 2 * n, n), env=xla)
  assert resumed.wait() == 0, resumed.stdout.read()
  a, b = losses(tmp_path / "straight"), losses(tmp_path / "killed")
  assert sorted(b) == list(range(1, 2 * n + 1))
  assert [a[s] for s in range(n + 1, 2 * n + 1)] == [b[s] for s in range(n + 1, 2 * n + 1)]
  cfg = run_cfg()
  jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / "straight", cfg),
               final_params(tmp_path / "killed", cfg))


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  proc = msm(*train_args(tmp_path / "run", 100000, 50))
  first = tmp_path / "run" / "checkpoints" / "50"
  deadline = time.time() + 300
  while not first.exists() and time.time() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, out
  assert "preempted" in out
  steps = sorted(int(p.name) for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit())
  assert steps[-1] > 50 and steps[-1] < 100000


def test_midtrain_to_finetune_handoff_starts_from_midtrain_params(tmp_path):
  mid = run_cfg("midtrain", steps=6, **{"mesh.data": 1})
  train(mid, tmp_path / "mid", jax.devices()[:1])
  mid_params = final_params(tmp_path / "mid", mid)
  ft = run_cfg("finetune", steps=4, init_from=str(tmp_path / "mid"), **{"mesh.data": 1})
  mesh = shd.make_mesh(ft, jax.devices()[:1])
  sf = StepFunctions(ft, ModelDef(ft.model), mesh)
  with open_run(ft.init_from) as source:
    state, _ = _init_from(ft, source, sf, mesh)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), mid_params)
  assert int(state.step) == 0
  adam = state.opt_state[1][0]
  assert int(adam.count) == 0
  assert all(float(np.abs(x).max()) == 0 for x in jax.tree.leaves((adam.mu, adam.nu)))
  # And the finetune run itself trains from there, on assistant tokens, with the same tokenizer.
  result = train(ft, tmp_path / "ft", jax.devices()[:1])
  assert int(result.state.step) == 4
  assert (tmp_path / "ft" / "tokenizer.model").read_bytes() == (tmp_path / "mid" / "tokenizer.model").read_bytes()


@pytest.mark.parametrize("target_devices", [1, 4])
def test_checkpoint_saved_on_eight_devices_restores_on_fewer(tmp_path, target_devices):
  cfg8 = tiny_cfg(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  sf8 = StepFunctions(cfg8, ModelDef(cfg8.model), shd.make_mesh(cfg8))
  state = sf8.init_state(7)
  ckpt = Checkpointer(tmp_path / "ckpt")
  ckpt.save(3, state, cfg8, stage="pretrain")
  ckpt.close()
  cfg = tiny_cfg(**{"mesh.data": 1, "mesh.fsdp": target_devices})
  sf = StepFunctions(cfg, ModelDef(cfg.model), shd.make_mesh(cfg, jax.devices()[:target_devices]))
  with open_run(tmp_path / "ckpt", 3) as run:
    restored = run.restore_state(abstract_like(_abstract_state(sf.model_def, sf.tx),
                                               sf.state_shardings))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
  assert restored.params["embed"].sharding.mesh.size == target_devices


def test_workdir_with_brackets_fails_before_work_naming_it(tmp_path):
  # orbax would save there and then fail on every restore
  with pytest.raises(CheckpointError, match=r"run\[1\].*brackets"):
    train(tiny_cfg(steps=1), tmp_path / "run[1]")


@pytest.mark.parametrize("overrides, field", [
    ({"model.nonexistent": "1"}, "config.model.nonexistent"),
    ({"mesh.data": "3"}, "config.mesh"),
    ({"model.n_kv_heads": "3"}, "config.model.n_kv_heads"),
    ({"batch_size": "6"}, "config.batch_size"),
    ({"steps": "abc"}, "config.steps"),
])
def test_bad_config_fails_before_work_naming_the_field(overrides, field):
  cfg = tiny_cfg(**{"mesh.data": -1})
  with pytest.raises(config_lib.ConfigError, match=field.replace(".", r"\.")):
    config_lib.apply_overrides(cfg, overrides)
    config_lib.validate(cfg, 8)


def test_cli_help_lists_subcommands_and_rejects_unknown_field(tmp_path):
  out = subprocess.run([sys.executable, "-m", "msm_jax.cli", "--help"], cwd=REPO,
                       capture_output=True, text=True)
  assert out.returncode == 0 and "train" in out.stdout
  bad = msm(*train_args(tmp_path / "x", 2, 1), "--config.model.widht=3")
  text, _ = bad.communicate(timeout=120)
  assert bad.returncode != 0 and "config.model.widht" in text
  assert not (tmp_path / "x" / "checkpoints").exists()


def test_mfu_never_exceeds_one_when_the_peak_probe_ran_on_a_busy_machine(tmp_path, monkeypatch):
  """A probe that measured too low a peak (the machine was loaded) is redone when a step beats
  it, so metrics never claim more than the machine's peak."""
  probes = iter([1.0] + [2.0] * 100)  # absurdly low peaks: every step beats them
  calls = []
  monkeypatch.setattr("msm_jax.trainer.measure_matmul_peak",
                      lambda: calls.append(1) or next(probes))
  cfg = run_cfg(steps=4, peak_flops=0.0, log_every=1, **{"mesh.data": 1})
  train(cfg, tmp_path / "run", jax.devices()[:1])
  mfu = [json.loads(l)["mfu"] for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
         if "mfu" in l]
  assert len(mfu) == 4 and all(0 < m <= 1.0 for m in mfu) and len(calls) > 1


def test_rerunning_a_finished_run_trains_nothing_and_reports_its_last_step(tmp_path):
  cfg = run_cfg(steps=3, **{"mesh.data": 1})
  first = train(cfg, tmp_path / "run", jax.devices()[:1])
  lines = (tmp_path / "run" / "metrics.jsonl").read_text()
  again = train(cfg, tmp_path / "run", jax.devices()[:1])
  assert again.last_metrics == first.last_metrics and again.last_metrics["step"] == 3
  assert (tmp_path / "run" / "metrics.jsonl").read_text() == lines


def test_msm_asks_xla_gpu_for_deterministic_kernels_unless_told_otherwise():
  from msm_jax.cli import deterministic_gpu
  assert deterministic_gpu({}) == "--xla_gpu_deterministic_ops=true"
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert deterministic_gpu(env).split() == ["--xla_force_host_platform_device_count=8",
                                            "--xla_gpu_deterministic_ops=true"]
  env = {"XLA_FLAGS": "--xla_gpu_deterministic_ops=false"}  # the user's choice stands
  assert deterministic_gpu(env) == "--xla_gpu_deterministic_ops=false"


def test_msm_keeps_compiled_programs_on_disk_where_told(tmp_path):
  from msm_jax.cli import compilation_cache
  env = {"XDG_CACHE_HOME": str(tmp_path)}
  assert compilation_cache(env) == str(tmp_path / "msm-jax" / "xla")
  assert env["JAX_COMPILATION_CACHE_MAX_SIZE"] == str(4 << 30)
  env = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}  # JAX's own variable is respected
  assert compilation_cache(env) == "/elsewhere"
  env = {"MSM_XLA_CACHE": str(tmp_path / "c"), "JAX_COMPILATION_CACHE_DIR": "/elsewhere"}
  assert compilation_cache(env) == str(tmp_path / "c")
  env = {"MSM_XLA_CACHE": "off"}
  assert compilation_cache(env) is None and "JAX_COMPILATION_CACHE_DIR" not in env
