#!/usr/bin/env bash
# Set up .venv if needed, then start the real ComfyUI (0.30.0, in .cache/hosts) with this pack
# installed (linked into custom_nodes).
#   PORT                  port to listen on (default 8188, loopback only)
#   ANALOGIST_COMFYUI_DIR ComfyUI's working folder (models/, input/, output/, user/);
#                         default ~/.cache/analogist-comfyui, outside the repo
set -euo pipefail
cd "$(dirname "$0")/.."
ANALOGIST_HOSTS=current bash scripts/setup_env.sh
host="$PWD/.cache/hosts/ComfyUI-0.30.0"

ws=${ANALOGIST_COMFYUI_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/analogist-comfyui}
mkdir -p "$ws/custom_nodes" "$ws/models/checkpoints" "$ws/user/default/workflows" "$ws/input"
ln -sfn "$PWD" "$ws/custom_nodes/comfyui-analogist"
# The example workflows appear in ComfyUI's workflow browser.
if compgen -G "workflows/*.json" >/dev/null; then
  cp workflows/*.json "$ws/user/default/workflows/"
fi
# The example images the shipped workflows' Load Image nodes name (made by the pack).
cp -n workflows/images/*.png "$ws/input/" 2>/dev/null || true

device=()
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  device=(--cpu)  # the registry torch is a CUDA build; without a GPU ComfyUI must be told
fi
if ! compgen -G "$ws/models/checkpoints/*" >/dev/null; then
  echo "[run] no checkpoint yet: put an SD1.5 inpainting checkpoint (e.g. sd-v1-5-inpainting.safetensors)"
  echo "      into $ws/models/checkpoints/"
fi
echo "[run] ComfyUI with Analogist at http://127.0.0.1:${PORT:-8188} (workspace: $ws)"
# The database (job history, assets) lives with the rest of your data in the workspace.
exec .venv/bin/python "$host/main.py" "${device[@]}" --base-directory "$ws" \
  --database-url "sqlite:///$ws/user/comfyui.db" --listen 127.0.0.1 --port "${PORT:-8188}"
