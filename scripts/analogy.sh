#!/usr/bin/env bash
# Set up .venv and ComfyUI 0.30.0 if needed, then solve A : A' :: B : ? headless: `python -m analogist run`.
# With no arguments: the pack's example images, the inpainting checkpoint in the ComfyUI
# folder that scripts/run.sh uses (~/.cache/analogist-comfyui/models/checkpoints), results
# in ./analogist-results. All options: bash scripts/analogy.sh --help
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ANALOGIST_HOSTS=current bash "$root/scripts/setup_env.sh"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
# The ComfyUI the runner starts: 0.30.0, set up in .cache/hosts (unless you say otherwise).
export ANALOGIST_COMFYUI_HOST="${ANALOGIST_COMFYUI_HOST:-$root/.cache/hosts/ComfyUI-0.30.0}"
exec "$root/.venv/bin/python" -m analogist run "$@"
