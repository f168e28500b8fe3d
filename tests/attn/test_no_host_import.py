"""The attention math must load without ComfyUI (it is plain torch by design)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("tokens", "attention", "sac", "cam", "reference", "blocks", "ranking")


def test_attention_modules_do_not_import_comfy() -> None:
    imports = "; ".join(f"import analogist_attn.{name}" for name in MODULES)  # bare on purpose: no pack, no host
    code = f"import sys; {imports}; assert not any(m.startswith('comfy') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
