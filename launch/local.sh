#!/usr/bin/env bash
# Trains one config in one process on all devices of this machine (every GPU it sees, else CPU).
# Usage, from the repository root after `bash launch/setup.sh cuda` (or plain setup.sh for CPU):
#   bash launch/local.sh [--cpu-devices N] [--dry-run] CONFIG [--workdir DIR] [--config.KEY=VALUE ...]
#   --cpu-devices N: N fake CPU devices (XLA_FLAGS) instead, to test the data-parallel code anywhere.
#   --dry-run: print the command instead of running it.
# CUDA_VISIBLE_DEVICES=0,1,... in front of the command restricts the GPUs. Rerunning the command
# with the same --workdir resumes from the last checkpoint.
set -euo pipefail

source launch/common.sh  # usage, run
dry_run=false
fake_devices=()
while (($#)); do
  case $1 in
    --cpu-devices)
      flags="--xla_force_host_platform_device_count=${2:?--cpu-devices needs N}"
      fake_devices=(env JAX_PLATFORMS=cpu "XLA_FLAGS=$flags${XLA_FLAGS:+ $XLA_FLAGS}")
      shift 2
      ;;
    --dry-run)
      dry_run=true
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) break ;;
  esac
done
if (($# < 1)); then
  usage >&2
  exit 2
fi
config=$1
shift
run "${fake_devices[@]}" .venv/bin/jaxpriv train --config "$config" "$@"
