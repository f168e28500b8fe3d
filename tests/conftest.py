"""Shared test set-up.

* ComfyUI (the real ``comfy`` package, installed from the registry) is told to run on the
  CPU before anything imports it: the registry's torch is a CUDA build and CI has no GPU.
* The pack itself is registered as the package ``comfyui_analogist`` (the name a clone
  gets does not matter), so node modules are imported the way ComfyUI imports them:
  ``from comfyui_analogist.nodes import grid``.
* ``analogist_attn`` is also importable on its own (pytest's ``pythonpath = ["."]``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_analogist"


def _comfy_on_cpu() -> None:
    """Make ``comfy`` parse ``--cpu`` on its first import (0.0.1 ignores argv otherwise)."""
    if "comfy.cli_args" in sys.modules:
        return
    from comfy import options

    options.enable_args_parsing()
    saved = sys.argv
    sys.argv = [saved[0], "--cpu"]
    try:
        import comfy.cli_args  # noqa: F401  (parses the arguments once, at import)
    finally:
        sys.argv = saved


def _register_pack() -> None:
    """Make the repo importable as a package without running its ``__init__``."""
    if PACK_NAME in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    assert spec is not None
    pack = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = pack
    # The repo root has an __init__.py, so pytest sees it as a package named after the
    # clone's folder and imports it before the first test. Point that name at the same
    # module: the pack is then imported once, under one identity.
    sys.modules.setdefault(ROOT.name, pack)


_comfy_on_cpu()
_register_pack()
