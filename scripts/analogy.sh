#!/usr/bin/env bash
# Set up .venv if needed, then solve A : A' :: B : ? headless: `python -m analogist run`.
# With no arguments: the pack's example images, the inpainting checkpoint in the ComfyUI
# folder that scripts/run.sh uses (~/.cache/analogist-comfyui/models/checkpoints), results
# in ./analogist-results. All options: bash scripts/analogy.sh --help
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$root/.venv/bin/python" -m analogist run "$@"
