"""The shipped workflows' generator (``workflows/build_workflows.py``), imported as a module."""

from __future__ import annotations

import importlib
import sys
from functools import cache
from pathlib import Path

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@cache
def workflow_builder():
    """``workflows/build_workflows.py`` (its ``node_definitions()`` reads the host the suite
    runs on). The folder holds only the builder's modules (uniquely named, imported as
    top-level modules the same way) and data, so it can sit on sys.path."""
    if str(WORKFLOWS) not in sys.path:
        sys.path.append(str(WORKFLOWS))
    return importlib.import_module("build_workflows")
