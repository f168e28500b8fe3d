"""The VLM client is plain Python: it loads without ComfyUI and without ``openai``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = (
    "errors",
    "urls",
    "keys",
    "request",
    "answers",
    "cache",
    "client",
    "clip_text",
    "transport",
)


def test_the_vlm_package_imports_neither_comfy_nor_openai() -> None:
    imports = "; ".join(
        f"import analogist_vlm.{name}" for name in MODULES
    )  # bare: no pack, no host
    code = (
        f"import sys; {imports}; "
        "assert not any(m.startswith('comfy') for m in sys.modules), 'comfy imported'; "
        "assert 'openai' not in sys.modules, 'openai imported at load time'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
