"""Shared test set-up.

* The host: ``ANALOGIST_COMFYUI_HOST`` names a ComfyUI source tree (ComfyUI 0.30.0, set up by
  scripts/setup_env.sh in .cache/hosts/) whose ``comfy`` is imported and whose ``main.py``
  the server tests start; unset, the ``comfyui`` package installed in this Python (the 2024
  registry packaging, 0.0.1) is the host. scripts/test.sh runs the suite on both.
* ComfyUI is told to run on the CPU before anything imports it: the registry's torch is a
  CUDA build and CI has no GPU.
* The pack itself is registered as the package ``comfyui_analogist`` (the name a clone
  gets does not matter), the one way tests import it, as ComfyUI does:
  ``from comfyui_analogist.nodes import grid``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_analogist"


def _repo_root_off_sys_path() -> None:
    """``python -m pytest`` puts the working folder (the repo root) on sys.path.

    There the pack's ``nodes/`` would pass for ComfyUI's top-level ``nodes`` module, and
    ``analogist_attn`` would be importable a second time, outside the pack.
    """
    sys.path[:] = [p for p in sys.path if (Path(p or os.getcwd()).resolve() != ROOT)]


def _use_host_tree() -> None:
    """Import ``comfy`` from the ComfyUI tree named by ANALOGIST_COMFYUI_HOST, if any.

    Appended, not prepended: the tree also holds top-level ``tests``, ``utils`` and
    ``nodes`` that must not shadow anything of ours.
    """
    tree = os.environ.get("ANALOGIST_COMFYUI_HOST")
    if not tree:
        return
    main = Path(tree) / "main.py"
    if not main.is_file():
        raise pytest.UsageError(f"ANALOGIST_COMFYUI_HOST={tree} is not a ComfyUI tree (no main.py)")
    if str(Path(tree)) not in sys.path:
        sys.path.append(str(Path(tree)))


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
    """Make the repo importable as the package ``comfyui_analogist`` without running its
    ``__init__``: ``analogist.import_pack``, the one way the runner, the workflow builder,
    the benchmarks and the tests all use. The root is on sys.path only for that import."""
    if PACK_NAME in sys.modules:
        return
    sys.path.insert(0, str(ROOT))
    try:
        from analogist import import_pack
    finally:
        sys.path.remove(str(ROOT))
    import_pack()


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


@pytest.fixture
def fake_key() -> str:
    """A key-shaped secret made for this test only (tests/vlm, tests/nodes, tests/host)."""
    from support.fake_secrets import make_secret

    return make_secret()


@pytest.fixture(scope="session")
def sd15_checkpoint() -> Path:
    """The random SD1.5 inpainting checkpoint (2.2 GB, cached in $TMPDIR/analogist-tests)."""
    from support import sd15

    return sd15.cached_sd15_inpainting_checkpoint(seed=0)


_repo_root_off_sys_path()
_use_host_tree()
_comfy_on_cpu()
_register_pack()
