#!/usr/bin/env bash
# Set up both hosts if needed, then run the test suite against the real ComfyUI:
#   1. ComfyUI 0.30.0 (current, .venv + .cache/hosts/ComfyUI-0.30.0): every test, the
#      frontend tests in headless Chromium included (skipped, saying why, without Chromium);
#   2. ComfyUI 0.0.1 (the oldest supported host, .venv-comfyui-0.0.1): every test but the
#      frontend ones (that host's frontend is not the one we ship workflows for).
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/attn -q`).
# ANALOGIST_TEST_HOSTS=current (or legacy) runs one host only.
set -uo pipefail
cd "$(dirname "$0")/.."
hosts=${ANALOGIST_TEST_HOSTS:-all}
if [ "$hosts" = current ]; then
  ANALOGIST_HOSTS=current bash scripts/setup_env.sh || exit 1
else
  bash scripts/setup_env.sh || exit 1
fi

rc_current=0
rc_legacy=0
if [ "$hosts" != legacy ]; then
  echo "[test] host: ComfyUI 0.30.0"
  ANALOGIST_COMFYUI_HOST="$PWD/.cache/hosts/ComfyUI-0.30.0" .venv/bin/python -m pytest "$@"
  rc_current=$?
fi
if [ "$hosts" != current ]; then
  echo "[test] host: ComfyUI 0.0.1 (oldest supported)"
  env -u ANALOGIST_COMFYUI_HOST .venv-comfyui-0.0.1/bin/python -m pytest -m "not frontend" "$@"
  rc_legacy=$?
fi
echo "[test] ComfyUI 0.30.0: exit $rc_current; ComfyUI 0.0.1: exit $rc_legacy"
# The first failure wins; 5 (no tests collected) only if neither run had anything else.
for rc in "$rc_current" "$rc_legacy"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then exit "$rc"; fi
done
if [ "$rc_current" -eq 5 ] && [ "$rc_legacy" -eq 5 ]; then exit 5; fi
exit 0
