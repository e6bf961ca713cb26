#!/usr/bin/env bash
# Creates .venv (if missing) and installs jaxpriv with its test tools. Idempotent and quiet.
# Usage: bash launch/setup.sh [extra ...]   e.g. bash launch/setup.sh anonymize
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
extras="test${1:+,$1}"
stamp=".venv/.jaxpriv-installed-$extras-$(cat pyproject.toml | cksum | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing jaxpriv[$extras] into .venv (first time: about two minutes)" >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
  touch "$stamp"
fi
