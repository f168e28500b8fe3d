#!/usr/bin/env bash
# The code checks CI runs before the tests: the formatter, the linter (E501 on at 100
# columns) and the type checker on the product packages.
#   bash scripts/lint.sh        # check (exit 1 on any finding)
#   bash scripts/lint.sh --fix  # format and apply the linter's safe fixes first
set -uo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
if [ "${1:-}" = --fix ]; then
  "$py" -m ruff format . && "$py" -m ruff check --fix .
fi
rc=0
echo "[lint] ruff format --check"
"$py" -m ruff format --check . || rc=1
echo "[lint] ruff check"
"$py" -m ruff check . || rc=1
# mypy checks the pack as the one package ComfyUI imports: the repo linked as comfyui_analogist.
echo "[lint] mypy (product packages)"
mkdir -p .cache/typecheck
ln -sfn "$PWD" .cache/typecheck/comfyui_analogist
packages=(analogist analogist_attn analogist_pixels analogist_metrics analogist_cli analogist_vlm
  analogist_diffusers nodes)
for extra in analogist_mimicbrush analogist_reversion analogist_sampling; do
  [ -d "$extra" ] && packages+=("$extra")
done
args=()
for p in "${packages[@]}"; do args+=(-p "comfyui_analogist.$p"); done
(cd .cache/typecheck && "../../$py" -m mypy --config-file ../../pyproject.toml "${args[@]}") || rc=1
exit "$rc"
