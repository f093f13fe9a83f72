"""Tests run on 8 simulated CPU devices (set before JAX is imported anywhere)."""

import os
import sys
from pathlib import Path

# XLA:CPU aborts the process when a collective's 8 device threads do not all reach it within
# its termination timeout; with 8 simulated devices per pytest worker on a loaded 2-core
# machine they sometimes do not (seen as "Fatal Python error: Aborted" in a worker), so wait.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8"
                           " --xla_cpu_collective_call_terminate_timeout_seconds=1800").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
