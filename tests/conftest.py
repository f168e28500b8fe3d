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

import pytest

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
    sys.modules[PACK_NAME] = importlib.util.module_from_spec(spec)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Keep pytest from importing the repo root's ``__init__.py`` before the tests.

    The root is a ComfyUI custom node, so pytest collects it as a package and, when
    setting it up, imports its ``__init__.py`` under a name taken from the clone's folder
    (which fails for names like ``comfyui-analogist`` and would import the pack twice).
    The tests import the pack as ``comfyui_analogist`` instead; the root needs no set-up.
    """
    for item in session.items:
        for node in item.listchain():
            if isinstance(node, pytest.Package) and Path(node.path) == ROOT:
                node.setup = lambda: None  # type: ignore[method-assign]
                return


_comfy_on_cpu()
_register_pack()
