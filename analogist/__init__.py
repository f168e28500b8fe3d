"""``python -m analogist``: the command-line entry point, nothing else.

The commands live in the package ``analogist_cli`` (see its docstring); this folder keeps
the published command name working and, for code that has the pack's folder on
``sys.path`` (the runner, ``import analogist_diffusers``), loads the pack the way ComfyUI
loads a custom node: as one package, ``comfyui_analogist``, without running its
``__init__`` (which registers nodes). Importing it is cheap: no torch, no ComfyUI.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

PACK_NAME = "comfyui_analogist"


def import_pack() -> None:
    """Register the pack's folder as the package ``comfyui_analogist`` (once)."""
    if PACK_NAME in sys.modules:
        return
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    assert spec is not None
    sys.modules[PACK_NAME] = importlib.util.module_from_spec(spec)
