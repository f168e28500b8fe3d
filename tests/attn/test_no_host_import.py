"""The math packages must load without ComfyUI: the attention math (plain torch by design),
the pixel code (PIL/numpy) and the metric."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("analogist_attn", "analogist_pixels", "analogist_metrics")


def test_math_packages_do_not_import_comfy() -> None:
    modules = [
        f"comfyui_analogist.{package}.{path.stem}"
        for package in PACKAGES
        for path in sorted((ROOT / package).glob("*.py"))
        if path.stem != "__init__"
    ]
    assert len(modules) >= 12
    code = (
        "import sys, importlib; from analogist import import_pack; import_pack(); "
        f"[importlib.import_module(m) for m in {modules!r}]; "
        "assert not any(m.startswith('comfy.') or m == 'comfy' for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('comfy'))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
