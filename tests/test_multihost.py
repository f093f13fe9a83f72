"""Real multi-process JAX on CPU: `msm launch-local` starts 2 processes x 4 simulated devices on
127.0.0.1 (Gloo collectives), compared with this pytest process (1 process x 8 devices).

The slow tests each start two fresh JAX processes that compile the tiny model (about a minute on
a loaded 2-core machine).
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from msm_jax import distributed
from msm_jax.checkpoint import open_run
from msm_jax.data.shards import host_shards
from msm_jax.launch_local import launch
from msm_jax.metrics import read_metrics
from msm_jax.sharding import make_mesh
from msm_jax.trainer import train
from tests.helpers import REPO, run_cfg

MSM = [sys.executable, "-m", "msm_jax.cli"]
SHARDS = 2  # data shards: the data order of every run below, whatever its host count


def _train_args(workdir, steps, **overrides):
  args = ["train", "--distributed", "--config", "configs/tiny.py", "--stage", "pretrain",
          "--workdir", str(workdir), f"--config.steps={steps}", f"--config.data.shards={SHARDS}",
          "--config.progress_bar=False", "--config.peak_flops=1e11", "--config.data.eval=()",
          "--config.async_checkpoints=False"]
  return args + [f"--config.{k}={v}" for k, v in overrides.items()]


def _launch_cmd(tmp_path, workdir, steps, **overrides):
  return MSM + ["launch-local", "--processes", "2", "--devices-per-process", "4", "--log-dir",
                str(tmp_path / "logs"), "--"] + MSM + _train_args(workdir, steps, **overrides)


def _env():
  return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def _launch(tmp_path, workdir, steps, **overrides):
  proc = subprocess.run(_launch_cmd(tmp_path, workdir, steps, **overrides), cwd=REPO, env=_env(),
                        capture_output=True, text=True, timeout=900)
  logs = "".join(p.read_text()[-3000:] for p in sorted((tmp_path / "logs").glob("*.log")))
  assert proc.returncode == 0, proc.stderr + logs


def _train_here(workdir, steps, **overrides):
  cfg = run_cfg(**{"steps": steps, "data.shards": SHARDS, "async_checkpoints": False,
                   **overrides})
  return train(cfg, workdir)


def _losses(workdir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in read_metrics(workdir / "metrics.jsonl") if "loss" in r}


def _params(workdir, step):
  with open_run(workdir, step) as run:
    return jax.device_get(run.restore_params(make_mesh(run.config)))


def test_settings_from_flags_or_environment(monkeypatch):
  for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES,
               distributed.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  assert distributed.settings() == {}  # a TPU pod: jax finds its peers
  monkeypatch.setenv(distributed.ENV_COORDINATOR, "10.0.0.1:1234")
  monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "4")
  monkeypatch.setenv(distributed.ENV_PROCESS_ID, "3")
  assert distributed.settings() == {"coordinator_address": "10.0.0.1:1234",
                                    "num_processes": 4, "process_id": 3}
  assert distributed.settings(process_id=1)["process_id"] == 1  # a flag beats the environment
  with pytest.raises(distributed.DistributedError, match="not in"):
    distributed.settings(process_id=4)
  monkeypatch.delenv(distributed.ENV_PROCESS_ID)
  with pytest.raises(distributed.DistributedError, match="MSM_PROCESS_ID"):
    distributed.settings()


@pytest.mark.parametrize("shards,hosts", [(2, 2), (4, 2), (2, 1), (1, 2), (3, 2)])
def test_host_rows_are_covered_by_their_shards(shards, hosts):
  batch = 12
  per_shard, per_host = batch // shards, batch // hosts
  for p in range(hosts):
    runs, offset = host_shards(shards, batch, p, hosts)
    rows = [s * per_shard + r for s in runs for r in range(per_shard)]
    assert rows[offset:offset + per_host] == list(range(p * per_host, (p + 1) * per_host))


def test_launcher_names_the_failed_worker(tmp_path):
  worker = [sys.executable, "-c",
            "import os, sys, time; i = int(os.environ['MSM_PROCESS_ID']); "
            "sys.exit(3) if i == 1 else time.sleep(120)"]
  out = tmp_path / "launcher.txt"
  with open(out, "w") as f:
    code = launch(worker, 3, log_dir=tmp_path / "logs", out=f)
  text = out.read_text()
  assert code == 1
  assert "worker process 1" in text and "exited with status 3" in text
  assert "stopped the other process(es) [0, 2]" in text  # not left waiting for 120 s


@pytest.mark.slow
def test_two_processes_match_one_and_resume_across_host_counts(tmp_path):
  one = tmp_path / "one"  # 1 process x 8 devices, uninterrupted: the reference
  _train_here(one, 6, checkpoint_every=3)
  reference = _losses(one)

  two = tmp_path / "two"  # 2 processes x 4 devices, 3 steps
  _launch(tmp_path, two, 3, checkpoint_every=3)
  got = _losses(two)
  assert sorted(got) == [1, 2, 3]  # one metrics file, each step once (process 0 writes)
  np.testing.assert_allclose([got[s] for s in (1, 2, 3)], [reference[s] for s in (1, 2, 3)],
                             rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _params(two, 3), _params(one, 3))
  data = sorted(p.name for p in (two / "checkpoints" / "3" / "data").glob("process_*"))
  assert data == ["process_0-of-2.json", "process_1-of-2.json"]  # each host's data state

  _train_here(two, 6, checkpoint_every=3)  # written by 2 processes, continued by 1
  resumed = _losses(two)
  np.testing.assert_allclose([resumed[s] for s in (4, 5, 6)], [reference[s] for s in (4, 5, 6)],
                             rtol=1e-5)

  back = tmp_path / "back"  # written by 1 process, continued by 2
  _train_here(back, 3, checkpoint_every=3)
  _launch(tmp_path, back, 6, checkpoint_every=3)
  resumed = _losses(back)
  np.testing.assert_allclose([resumed[s] for s in (4, 5, 6)], [reference[s] for s in (4, 5, 6)],
                             rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _params(back, 6), _params(one, 6))


def _start(tmp_path, workdir):
  """2 workers training 'forever'; returns (launcher, worker pids) once step 2 is logged."""
  launcher = subprocess.Popen(_launch_cmd(tmp_path, workdir, 100000, checkpoint_every=100000),
                              cwd=REPO, env=_env(), stderr=subprocess.PIPE, text=True)
  pids = []
  while len(pids) < 2:
    line = launcher.stderr.readline()
    assert line, "launcher ended early"
    if ": pid " in line:
      pids.append(int(line.rsplit(" ", 1)[1]))
  deadline = time.time() + 600
  while len(_losses(workdir) if (workdir / "metrics.jsonl").exists() else {}) < 2:
    assert launcher.poll() is None and time.time() < deadline
    time.sleep(0.5)
  return launcher, pids


@pytest.mark.slow
def test_killed_worker_fails_the_launch_naming_it(tmp_path):
  launcher, pids = _start(tmp_path, tmp_path / "run")
  os.kill(pids[1], signal.SIGKILL)
  _, err = launcher.communicate(timeout=120)
  assert launcher.returncode == 1
  assert f"worker process 1 (pid {pids[1]}) killed by SIGKILL" in err
  # process 0 is stopped by the launcher, or aborts by itself when Gloo loses its peer: either
  # way the launch ends instead of waiting forever, and nothing of it is left running
  assert "stopped the other process(es) [0]" in err or "worker process 0" in err
  with pytest.raises(ProcessLookupError):
    os.kill(pids[0], 0)


@pytest.mark.slow
def test_sigterm_saves_one_checkpoint_and_the_rerun_resumes(tmp_path):
  run = tmp_path / "run"
  launcher, _ = _start(tmp_path, run)
  launcher.send_signal(signal.SIGTERM)  # passed on to every worker
  _, err = launcher.communicate(timeout=300)
  assert launcher.returncode == 0, err
  steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
  assert len(steps) == 1  # one checkpoint, at the step both processes agreed on
  saved = steps[0]
  files = sorted(p.name for p in (run / "checkpoints" / str(saved) / "data").glob("process_*"))
  assert files == ["process_0-of-2.json", "process_1-of-2.json"]
  states = [json.loads((run / "checkpoints" / str(saved) / "data" / f).read_text())
            for f in files]
  assert [sorted(s["states"]) for s in states] == [["0"], ["1"]]
  assert max(_losses(run)) == saved
  result = _train_here(run, saved + 1, checkpoint_every=100000)  # the rerun resumes
  assert not result.preempted
  assert max(_losses(run)) == saved + 1 and result.last_metrics["step"] == saved + 1
