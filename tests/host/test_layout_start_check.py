"""SAC and CAM refuse a layout of the other arrangement, through the real ComfyUI server
(issue 23).

With one example pair, "A' right of A" and "A aligned with B" put B' in the same corner,
so the inpainting mask cannot tell their layouts apart; the latent the sampler starts from
can (B' is a copy of B there: ``analogist_pixels/start_latent.py``). The graph is the
shipped manual-prompt workflow with a second Grid Compose, of the other arrangement, whose
layout alone reaches SAC and CAM; the sampled grid stays the first one's.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from comfyui_analogist.analogist_cli.workflow_format import nodes_of_type, set_widget, ui_to_api
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
CELL = 64
ALIGNED = "A aligned with B"


@pytest.fixture(scope="module")
def server(comfy_server):
    pytest.importorskip(
        "comfy.patcher_extension", reason="this ComfyUI (0.0.1) has no sampling wrappers"
    )
    for image in (WORKFLOWS / "images").glob("*.png"):
        shutil.copy(image, comfy_server.workspace / "input" / image.name)
    comfy_server.info = comfy_server.object_info()
    return comfy_server


def manual_prompt(server) -> dict:
    workflow = json.loads((WORKFLOWS / "analogist_manual_prompt.json").read_text())
    for node in nodes_of_type(workflow, "CheckpointLoaderSimple"):
        set_widget(workflow, node["id"], "ckpt_name", checkpoint_name(0), server.info)
    for node in nodes_of_type(workflow, "AnalogistGridCompose"):
        set_widget(workflow, node["id"], "cell_width", CELL, server.info)
        set_widget(workflow, node["id"], "cell_height", CELL, server.info)
    for node in nodes_of_type(workflow, "KSampler"):
        set_widget(workflow, node["id"], "steps", 1, server.info)
    return ui_to_api(workflow, server.info)


def with_other_arrangements_layout(prompt: dict) -> dict:
    """A second Grid Compose (same images, the other arrangement) feeds SAC and CAM."""
    (compose_id,) = [k for k, v in prompt.items() if v["class_type"] == "AnalogistGridCompose"]
    compose = prompt[compose_id]
    assert compose["inputs"]["arrangement"] != ALIGNED
    prompt["other"] = {
        "class_type": "AnalogistGridCompose",
        "inputs": {**compose["inputs"], "arrangement": ALIGNED},
    }
    layout_output = None
    for node in prompt.values():
        if node["class_type"] in ("AnalogistSACPatch", "AnalogistCAMPatch"):
            layout_output = node["inputs"]["layout"][1]
            node["inputs"]["layout"] = ["other", layout_output]
    assert layout_output is not None
    return prompt


def test_a_layout_of_the_other_arrangement_is_refused_before_it_edits_the_wrong_cells(server):
    result = server.run(with_other_arrangements_layout(manual_prompt(server)))
    assert not result.ok, "a layout of the other arrangement was sampled"
    text = result.error_text()
    assert "its layout does not belong to the grid being sampled" in text, text
    assert "B' is a copy of the cell this layout calls A'" in text, text
    assert '"A aligned with B"' in text and "connect that Grid Compose's layout output" in text


def test_the_grid_composes_own_layout_runs(server):
    result = server.run(manual_prompt(server))
    assert result.ok, result.error_text() + "\n" + server.log_tail()
