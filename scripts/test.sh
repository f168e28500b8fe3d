#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite against the real ComfyUI host.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/attn -q`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
