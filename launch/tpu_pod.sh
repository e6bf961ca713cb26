#!/usr/bin/env bash
# Trains one config on every worker (host) of a Cloud TPU VM pod slice: copies this checkout's
# files (tracked, and untracked unless git-ignored) to ~/jaxpriv on each worker, runs
# `bash launch/setup.sh tpu` there (installs jaxpriv[tpu] once), then starts
# `jaxpriv train --distributed` on all workers at once (JAX finds them through the TPU metadata).
# Usage, from the repository root, with gcloud logged in to the TPU's project:
#   bash launch/tpu_pod.sh [--dry-run] TPU_NAME ZONE CONFIG --workdir DIR [--config.KEY=VALUE ...]
#   DIR: an absolute path to one folder that every worker sees (e.g. a Filestore/NFS mount).
#   --dry-run: print the gcloud commands instead of running them.
# The run lasts as long as this command (ssh): start it inside tmux or screen. Rerunning it with
# the same --workdir resumes from the last checkpoint.
set -euo pipefail

source launch/common.sh  # usage, run
dry_run=false
case ${1:-} in
  --dry-run)
    dry_run=true
    shift
    ;;
  -h | --help)
    usage
    exit 0
    ;;
esac
if (($# < 3)); then
  usage >&2
  exit 2
fi
name=$1 zone=$2 config=$3
shift 3
archive="${TMPDIR:-/tmp}/jaxpriv-source.tgz"
if ! $dry_run; then
  git ls-files -z --cached --others --exclude-standard | tar --null -czf "$archive" -T -
  trap 'rm -f "$archive"' EXIT
fi
printf -v train_args '%q ' --config "$config" "$@"
remote="mkdir -p jaxpriv && tar -xzf jaxpriv-source.tgz -C jaxpriv && cd jaxpriv"
remote+=" && bash launch/setup.sh tpu && .venv/bin/jaxpriv train --distributed ${train_args% }"
run gcloud compute tpus tpu-vm scp "$archive" "$name:" --zone="$zone" --worker=all
run gcloud compute tpus tpu-vm ssh "$name" --zone="$zone" --worker=all --command="$remote"
