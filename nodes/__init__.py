"""ComfyUI glue: one module per node family, each exporting its own mappings.

A family that fails to import (a missing or broken dependency) is logged and skipped,
so ComfyUI still starts and the other families load.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger("analogist")

# Node-family modules under nodes/, in menu order.
FAMILIES: tuple[str, ...] = (
    "grid",
    "attention",
    "vlm",
    "rank",
    "sampling",
    "mimicbrush",
    "reversion",
)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
FAILED_FAMILIES: dict[str, str] = {}


def _register(family: str) -> None:
    try:
        module = importlib.import_module(f".{family}", __name__)
    except Exception as exc:  # any failure here must not break ComfyUI start-up
        FAILED_FAMILIES[family] = f"{type(exc).__name__}: {exc}"
        log.error("[Analogist] the %s nodes are disabled: %s", family, FAILED_FAMILIES[family])
        return
    NODE_CLASS_MAPPINGS.update(module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(module.NODE_DISPLAY_NAME_MAPPINGS)


for _family in FAMILIES:
    _register(_family)
