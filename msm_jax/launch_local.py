"""`msm launch-local`: N processes of one command on this machine, as the N hosts of a job.

    msm launch-local --processes 2 --devices-per-process 4 -- \\
        msm train --distributed --config configs/tiny.py --stage pretrain --workdir /tmp/run

Each process gets MSM_COORDINATOR (127.0.0.1 and a free port), MSM_NUM_PROCESSES and
MSM_PROCESS_ID (read by `msm train --distributed`), and with --devices-per-process that many
simulated CPU devices. What the launcher promises, the same as a pod launcher must:

* a worker that dies (nonzero status or a signal) makes the launcher stop the others (they would
  wait forever in a collective with the dead one) and exit 1, naming every failed worker;
* SIGTERM or SIGINT to the launcher is passed to every worker as SIGTERM, so they all save one
  checkpoint at the same step (`msm_jax.distributed.StopAgreement`) and exit 0;
* with --log-dir, worker i writes to LOG_DIR/process_i.log; otherwise to this terminal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from msm_jax import distributed

EXIT_WORKER_FAILED = 1


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _status(code: int) -> str:
  if code < 0:
    try:
      return f"killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"killed by signal {-code}"
  return f"exited with status {code}"


def worker_env(i: int, n: int, port: int, devices_per_process: int | None) -> dict:
  env = dict(os.environ)
  env.update({distributed.ENV_COORDINATOR: f"127.0.0.1:{port}",
              distributed.ENV_NUM_PROCESSES: str(n), distributed.ENV_PROCESS_ID: str(i)})
  if devices_per_process:
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(
        flags + [f"--xla_force_host_platform_device_count={devices_per_process}"])
    env["JAX_PLATFORMS"] = "cpu"
  return env


def launch(command: list[str], processes: int, *, devices_per_process: int | None = None,
           log_dir=None, poll_s: float = 0.2, out=sys.stderr) -> int:
  """Run `command` as `processes` workers; 0 when all exit 0, else EXIT_WORKER_FAILED."""
  if not command:
    raise distributed.DistributedError("launch-local: no command given after --")
  port = free_port()
  logs = []
  procs: list[subprocess.Popen] = []
  if log_dir is not None:
    Path(log_dir).mkdir(parents=True, exist_ok=True)
  for i in range(processes):
    log = open(Path(log_dir) / f"process_{i}.log", "wb") if log_dir is not None else None
    logs.append(log)
    procs.append(subprocess.Popen(command, env=worker_env(i, processes, port, devices_per_process),
                                  stdout=log, stderr=subprocess.STDOUT if log else None,
                                  start_new_session=True))
    print(f"msm launch-local: process {i}: pid {procs[-1].pid}", file=out, flush=True)

  def forward(signum, frame):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGTERM)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
  stopped: set[int] = set()  # workers the launcher killed after another one failed
  try:
    while True:
      codes = [p.poll() for p in procs]  # poll every worker (any() would stop at the first)
      if all(c is not None for c in codes):
        break
      if any(c not in (None, 0) for c in codes):
        # the survivors would block forever on the dead one in their next collective
        stopped = {i for i, p in enumerate(procs) if p.poll() is None}
        for i in stopped:
          procs[i].kill()
        for p in procs:
          p.wait()
        break
      time.sleep(poll_s)
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for log in logs:
      if log is not None:
        log.close()
  failed = [i for i, p in enumerate(procs) if p.returncode != 0 and i not in stopped]
  if not failed:
    return 0
  for i in failed:
    where = f" (log {Path(log_dir) / f'process_{i}.log'})" if log_dir is not None else ""
    print(f"msm launch-local: worker process {i} (pid {procs[i].pid}) "
          f"{_status(procs[i].returncode)}{where}", file=out, flush=True)
  if stopped:
    print(f"msm launch-local: stopped the other process(es) {sorted(stopped)}", file=out,
          flush=True)
  return EXIT_WORKER_FAILED


def run_launch_local_command(args) -> int:
  command = list(args.worker_command)
  if command and command[0] == "--":
    command = command[1:]
  return launch(command, args.processes, devices_per_process=args.devices_per_process,
                log_dir=args.log_dir)


def add_launch_local_parser(subparsers) -> None:
  p = subparsers.add_parser(
      "launch-local", help="run one command as N local processes of a multi-host job",
      description="Run COMMAND as N processes on this machine with MSM_COORDINATOR, "
      "MSM_NUM_PROCESSES and MSM_PROCESS_ID set (for `msm train --distributed`). Exits 1 "
      "naming the worker when any fails; SIGTERM is passed on to every worker.")
  p.add_argument("--processes", type=int, required=True)
  p.add_argument("--devices-per-process", type=int, default=None,
                 help="simulated CPU devices per process (sets XLA_FLAGS, JAX_PLATFORMS=cpu)")
  p.add_argument("--log-dir", default=None, help="write worker i's output to LOG_DIR/process_i.log")
  p.add_argument("worker_command", nargs="...", help="-- then the command, e.g. msm train ...")
  p.set_defaults(func=run_launch_local_command)
