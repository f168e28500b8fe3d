"""The shipped workflows' generator (``workflows/build_workflows.py``), loaded as a module."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@cache
def workflow_builder():
    """``workflows/build_workflows.py`` as a module (its ``node_definitions()`` reads the
    host the suite runs on)."""
    spec = importlib.util.spec_from_file_location("build_workflows", WORKFLOWS / "build_workflows.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module
