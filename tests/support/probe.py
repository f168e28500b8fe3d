"""The test-only patch probe (``tests/support/patch_probe``) on a real ComfyUI server: a
server with it in ``custom_nodes``, the probe wired after a sampler, and its report."""

from __future__ import annotations

import json
from pathlib import Path

from support.comfy_server import ComfyServer

PROBE = Path(__file__).resolve().parent / "patch_probe"
# The paper's blocks 3..10 of SD1.5 (0-5 = input 1, 2, 4, 5, 7, 8; 6 = middle; 7-15 = output 3..11).
PAPER_BLOCKS = sorted(
    [
        "input:5:0",
        "input:7:0",
        "input:8:0",
        "middle:0:0",
        "output:3:0",
        "output:4:0",
        "output:5:0",
        "output:6:0",
    ]
)


def start_probe_server(workspace: Path) -> ComfyServer:
    """A started server on ``workspace`` with the probe linked into its ``custom_nodes``;
    its ``/object_info`` is kept as ``.info``."""
    (workspace / "custom_nodes" / "analogist-test-probe").symlink_to(
        PROBE, target_is_directory=True
    )
    comfy = ComfyServer(workspace).start()
    comfy.info = comfy.object_info()
    return comfy


def with_probe(prompt: dict, sampler: str = "KSampler") -> dict:
    """Add the probe as node ``"probe"``: the (one) sampler's model and its result in, call
    counters out."""
    (sampler_id,) = [k for k, v in prompt.items() if v["class_type"] == sampler]
    prompt["probe"] = {
        "class_type": "AnalogistTestPatchProbe",
        "inputs": {"model": prompt[sampler_id]["inputs"]["model"], "samples": [sampler_id, 0]},
    }
    return prompt


def probe_report(result) -> dict:
    """The probe's counters from a finished run: per patch kind, where it fired and how often."""
    return json.loads(result.outputs["probe"]["text"][0])
