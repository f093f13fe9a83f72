#!/usr/bin/env bash
# Drive msm on a Cloud TPU VM or pod slice: create it, ship this tree, run, read logs, delete.
#
#   launch/tpu_pod.sh [FLAGS] create
#   launch/tpu_pod.sh [FLAGS] setup                 # ship this checkout to every worker, install
#   launch/tpu_pod.sh [FLAGS] run [--] msm ARGS...  # the same command on every worker, one log each
#   launch/tpu_pod.sh [FLAGS] logs [--follow]       # tail the per-worker logs of the last run
#   launch/tpu_pod.sh [FLAGS] ssh [--] [COMMAND...] # a shell on --worker (default 0), or one
#                                                   # command run there as `run` runs it
#   launch/tpu_pod.sh [FLAGS] delete
#
# FLAGS (each also read from the environment variable named after it; flags win):
#   --name NAME           MSM_TPU_NAME         the TPU (and queued resource) name      (required)
#   --zone ZONE           MSM_ZONE             e.g. us-east5-a                         (required)
#   --project PROJECT     MSM_PROJECT          default: gcloud's configured project
#   --accelerator TYPE    MSM_ACCELERATOR      e.g. v5p-64, v6e-256                    (v5p-8)
#   --version VERSION     MSM_RUNTIME_VERSION  TPU software version (default by TPU generation)
#   --spot                MSM_SPOT=1           spot capacity
#   --queued              MSM_QUEUED=1         create/delete through a queued resource
#   --workers N           MSM_NUM_WORKERS      hosts in the slice (default: gcloud describe)
#   --env VAR[,VAR..]     MSM_ENV              pass these local variables (or VAR=VALUE) on
#   --worker N            MSM_WORKER           the worker for `ssh` (0) and `logs` (all)
#   --log-dir DIR         MSM_LOG_DIR          runs/tpu-logs/NAME: worker-N.log per worker
#   --remote-dir DIR      MSM_REMOTE_DIR       the project's directory under ~ on each worker
#   --repo URL            MSM_REPO_URL         `setup` clones/pulls this instead of shipping the tree
#   --dry-run             MSM_DRY_RUN=1        print every command instead of running it
#
# `run` exits nonzero, naming the failing worker(s), when any worker's command failed. It keeps
# one ssh session per worker open for the whole run: start it from a machine that stays up.
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the script too

usage() { sed -n '2,/^set /{/^#/p}' "$0"; }
die() { echo "tpu_pod.sh: $*" >&2; exit 2; }

NAME=${MSM_TPU_NAME:-}
ZONE=${MSM_ZONE:-}
PROJECT=${MSM_PROJECT:-}
ACCELERATOR=${MSM_ACCELERATOR:-v5p-8}
VERSION=${MSM_RUNTIME_VERSION:-}
SPOT=${MSM_SPOT:-0}
QUEUED=${MSM_QUEUED:-0}
WORKERS=${MSM_NUM_WORKERS:-}
ENV_VARS=${MSM_ENV:-}
WORKER=${MSM_WORKER:-}
LOG_DIR=${MSM_LOG_DIR:-}
REMOTE_DIR=${MSM_REMOTE_DIR:-msm-jax}
REPO_URL=${MSM_REPO_URL:-}
DRY_RUN=${MSM_DRY_RUN:-0}
FOLLOW=0
SUBCOMMAND=""
REST=()

while [ $# -gt 0 ]; do
  arg=$1
  case $arg in
    --*=*) flag=${arg%%=*}; value=${arg#*=}; has_value=1 ;;
    *) flag=$arg; value=${2:-}; has_value=0 ;;
  esac
  case $flag in
    --name|--zone|--project|--accelerator|--version|--workers|--env|--worker|--log-dir|\
    --remote-dir|--repo)
      if [ "$has_value" = 0 ]; then
        [ $# -ge 2 ] || die "$flag needs a value"
        shift
      fi
      case $flag in
        --name) NAME=$value ;;
        --zone) ZONE=$value ;;
        --project) PROJECT=$value ;;
        --accelerator) ACCELERATOR=$value ;;
        --version) VERSION=$value ;;
        --workers) WORKERS=$value ;;
        --env) ENV_VARS="$ENV_VARS,$value" ;;
        --worker) WORKER=$value ;;
        --log-dir) LOG_DIR=$value ;;
        --remote-dir) REMOTE_DIR=$value ;;
        --repo) REPO_URL=$value ;;
      esac ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --follow|-f) FOLLOW=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; REST+=("$@"); break ;;
    -*) [ -n "$SUBCOMMAND" ] && { REST+=("$@"); break; }; die "unknown flag $arg (see --help)" ;;
    *)
      if [ -z "$SUBCOMMAND" ]; then SUBCOMMAND=$arg; else REST+=("$@"); break; fi ;;
  esac
  shift
done

[ -n "$SUBCOMMAND" ] || { usage; exit 2; }
[ -n "$NAME" ] || die "no TPU name: pass --name or set MSM_TPU_NAME"
[ -n "$ZONE" ] || die "no zone: pass --zone or set MSM_ZONE"
LOG_DIR=${LOG_DIR:-runs/tpu-logs/$NAME}
GCLOUD_FLAGS=("--zone=$ZONE")
[ -z "$PROJECT" ] || GCLOUD_FLAGS+=("--project=$PROJECT")

# One word, quoted for a POSIX shell only when it needs it (readable dry-run output);
# a --flag=value word keeps its flag bare.
quote() {
  if [[ $1 =~ ^(--[a-z][a-z-]*=)(.*)$ ]]; then
    printf '%s' "${BASH_REMATCH[1]}"; quote_word "${BASH_REMATCH[2]}"
  else
    quote_word "$1"
  fi
}
quote_word() {
  case $1 in
    '') printf "''" ;;
    *[!A-Za-z0-9_./=:,@%+-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}
quote_all() {
  local sep="" word
  for word in "$@"; do printf '%s' "$sep"; quote "$word"; sep=" "; done
}
# Run a command, or print it under --dry-run.
x() {
  if [ "$DRY_RUN" = 1 ]; then quote_all "$@"; echo; else "$@"; fi
}

default_version() {
  case $ACCELERATOR in
    v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-*|v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) die "no default runtime version for $ACCELERATOR: pass --version" ;;
  esac
}

num_workers() {
  if [ -n "$WORKERS" ]; then echo "$WORKERS"; return; fi
  local describe=(gcloud compute tpus tpu-vm describe "$NAME" "${GCLOUD_FLAGS[@]}"
                  "--format=value(networkEndpoints.len())")
  if [ "$DRY_RUN" = 1 ]; then
    quote_all "${describe[@]}" >&2; echo >&2
    die "--dry-run cannot ask gcloud for the worker count: pass --workers N"
  fi
  "${describe[@]}"
}

# `export A=1 B=2 && ` for the variables named in ENV_VARS (comma or space separated).
env_prefix() {
  local item out="" name items
  IFS=', ' read -ra items <<<"$ENV_VARS"
  for item in "${items[@]}"; do
    name=${item%%=*}
    [ -n "$item" ] || continue
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--env: '$name' is not a variable name"
    if [[ $item == *=* ]]; then
      out+=" $name=$(quote "${item#*=}")"
    elif [ -n "${!item+set}" ]; then
      out+=" $item=$(quote "${!item}")"
    else
      echo "tpu_pod.sh: --env $item is not set here; not passed" >&2
    fi
  done
  [ -z "$out" ] || printf 'export%s && ' "$out"
}

# The command in REST as each worker runs it: in the project, pip's scripts on PATH, --env set.
remote_command() {
  local env
  env=$(env_prefix)
  # shellcheck disable=SC2016  # $HOME and $PATH expand on the worker
  printf 'cd ~/%s && export PATH="$HOME/.local/bin:$PATH" && %s%s' "$REMOTE_DIR" "$env" \
    "$(quote_all "${REST[@]}")"
}

cmd_create() {
  local version spot=()
  version=${VERSION:-$(default_version)}
  [ "$SPOT" = 1 ] && spot=(--spot)
  if [ "$QUEUED" = 1 ]; then
    x gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${GCLOUD_FLAGS[@]}" \
      --accelerator-type="$ACCELERATOR" --runtime-version="$version" "${spot[@]}"
  else
    x gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_FLAGS[@]}" \
      --accelerator-type="$ACCELERATOR" --version="$version" "${spot[@]}"
  fi
}

cmd_setup() {
  local root tarball fetch install
  # shellcheck disable=SC2088  # ~ expands on the worker
  local dir="~/$REMOTE_DIR"
  install="cd $dir && python3 -m pip install -q -e . \"jax[tpu]\""
  if [ -n "$REPO_URL" ]; then  # clone (or update) a repository on each worker
    fetch="(test -d $dir || git clone $(quote "$REPO_URL") $dir) && git -C $dir pull -q"
  else  # ship this checkout, uncommitted changes and local data included
    root=$(cd "$(dirname "$0")/.." && pwd)
    tarball=${TMPDIR:-/tmp}/$REMOTE_DIR-$NAME.tar.gz
    x tar -C "$root" -czf "$tarball" --exclude=./.venv --exclude=./.git --exclude=./runs \
      --exclude=__pycache__ .
    x gcloud compute tpus tpu-vm scp "$tarball" "$NAME:$REMOTE_DIR.tar.gz" "${GCLOUD_FLAGS[@]}" \
      --worker=all
    fetch="mkdir -p $dir && tar -xzf $dir.tar.gz -C $dir"
  fi
  x gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker=all \
    --command="$fetch && $install"
}

cmd_run() {
  [ ${#REST[@]} -gt 0 ] || die "run: no command given (e.g. run msm train --config ...)"
  local n remote i failed=() status
  n=$(num_workers)
  [[ $n =~ ^[1-9][0-9]*$ ]] || die "worker count '$n' is not a positive number"
  remote=$(remote_command)
  local ssh=(gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}")
  if [ "$DRY_RUN" = 1 ]; then
    for ((i = 0; i < n; i++)); do x "${ssh[@]}" --worker="$i" --command="$remote"; done
    return 0
  fi
  mkdir -p "$LOG_DIR"
  PIDS=()
  trap 'kill "${PIDS[@]}" 2>/dev/null; exit 130' INT TERM
  for ((i = 0; i < n; i++)); do
    "${ssh[@]}" --worker="$i" --command="$remote" >"$LOG_DIR/worker-$i.log" 2>&1 &
    PIDS+=($!)
  done
  echo "tpu_pod.sh: $n worker(s) running; logs in $LOG_DIR/worker-N.log" >&2
  for ((i = 0; i < n; i++)); do
    status=0
    wait "${PIDS[$i]}" || status=$?
    echo "worker $i: exit $status" >&2
    [ "$status" = 0 ] || failed+=("$i (exit $status, $LOG_DIR/worker-$i.log)")
  done
  trap - INT TERM
  if [ ${#failed[@]} -gt 0 ]; then
    local IFS=';'
    echo "tpu_pod.sh: FAILED on worker(s): ${failed[*]}" >&2
    return 1
  fi
  echo "tpu_pod.sh: all $n worker(s) succeeded" >&2
}

cmd_logs() {
  local files=()
  if [ -n "$WORKER" ]; then
    files=("$LOG_DIR/worker-$WORKER.log")
  elif [ "$DRY_RUN" = 1 ]; then
    files=("$LOG_DIR"/worker-*.log)
  else
    shopt -s nullglob
    files=("$LOG_DIR"/worker-*.log)
    [ ${#files[@]} -gt 0 ] || die "no logs in $LOG_DIR (run first, or pass --log-dir)"
  fi
  if [ "$FOLLOW" = 1 ]; then x tail -n 20 -f "${files[@]}"; else x tail -n 50 "${files[@]}"; fi
}

cmd_ssh() {
  local command=() remote
  if [ ${#REST[@]} -gt 0 ]; then
    remote=$(remote_command)
    command=(--command="$remote")
  fi
  x gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_FLAGS[@]}" --worker="${WORKER:-0}" \
    "${command[@]}"
}

cmd_delete() {
  if [ "$QUEUED" = 1 ]; then
    x gcloud compute tpus queued-resources delete "$NAME" "${GCLOUD_FLAGS[@]}" --force --quiet
  else
    x gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_FLAGS[@]}" --quiet
  fi
}

case $SUBCOMMAND in
  create|setup|run|logs|ssh|delete) "cmd_$SUBCOMMAND" ;;
  *) die "unknown subcommand '$SUBCOMMAND' (create | setup | run | logs | ssh | delete)" ;;
esac
