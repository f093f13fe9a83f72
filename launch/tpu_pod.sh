#!/usr/bin/env bash
# Run one msm stage on every host of a Cloud TPU pod slice.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG STAGE WORKDIR [--config.key=value ...]
#
# WORKDIR must be a path every host sees (a shared filesystem or a gcsfuse mount of a bucket):
# checkpoints and metrics go there. Each host runs the same command; jax.distributed.initialize() discovers the
# others, each host reads its own shard of the data, and the mesh spans all chips (set
# --config.mesh.fsdp=-1 etc. for large models). Preemption (SIGTERM) saves a checkpoint; rerunning
# the same command resumes from it.
set -euo pipefail
if [ $# -lt 5 ]; then
  sed -n '2,11p' "$0"; exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; STAGE=$4; WORKDIR=$5; shift 5
REPO_URL=${MSM_REPO_URL:-}
PROJECT_DIR=${MSM_PROJECT_DIR:-msm-jax}
SETUP="cd ~/$PROJECT_DIR && python3 -m pip install -q -e . 'jax[tpu]'"
if [ -n "$REPO_URL" ]; then
  SETUP="(test -d ~/$PROJECT_DIR || git clone $REPO_URL ~/$PROJECT_DIR) && $SETUP"
else
  # Copy this checkout to every host.
  gcloud compute tpus tpu-vm scp --recurse --zone "$ZONE" --worker=all \
    "$(cd "$(dirname "$0")/.." && pwd)" "$TPU_NAME:~/$PROJECT_DIR"
fi
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "$SETUP && python3 -m msm_jax.cli train --distributed --config $CONFIG --stage $STAGE --workdir $WORKDIR --config.model.compute_dtype=bfloat16 $ARGS"
