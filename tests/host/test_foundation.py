"""The pack inside the real ComfyUI server: it loads, its nodes are listed, and its grid
nodes work around the host's plain SD1.5 inpainting on the random checkpoint."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from comfyui_analogist.nodes import NODE_CLASS_MAPPINGS
from PIL import Image
from support.comfy_server import ComfyServer, make_workspace
from support.images import pattern
from support.prompts import grid_nodes, inpaint_conditioning, sample_and_crop
from support.sd15 import checkpoint_name

CHECKPOINT_NAME = checkpoint_name(0)

pytestmark = pytest.mark.host

# Every node the pack registers (new families are covered without editing this list).
PACK_NODES = set(NODE_CLASS_MAPPINGS)
CORE_NODES = {
    "AnalogistGridCompose",
    "AnalogistMarkAndArrow",
    "AnalogistGridCrop",
    "AnalogistSACPatch",
    "AnalogistCAMPatch",
    "AnalogistGPT4VPrompt",
}


def grid_inpainting_prompt(steps: int = 2, cell: int = 64) -> dict:
    """Grid Compose -> the host's inpainting (no attention edits) -> Grid Crop -> SaveImage."""
    return {
        **grid_nodes(CHECKPOINT_NAME, ("plain_a.png", "plain_a_prime.png", "plain_b.png"), cell),
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red apple", "clip": ["1", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "8": inpaint_conditioning("6", "7"),
        **sample_and_crop(
            9, model=["1", 0], conditioning="8", steps=steps, cfg=7.5, prefix="plain"
        ),
    }


def test_pack_nodes_are_listed_in_object_info(comfy_server):
    info = comfy_server.object_info()
    assert CORE_NODES <= PACK_NODES, f"the pack lost nodes: {sorted(CORE_NODES - PACK_NODES)}"
    missing = PACK_NODES - info.keys()
    assert not missing, f"not registered: {sorted(missing)}\n{comfy_server.log_tail()}"
    for node_id in PACK_NODES:
        assert info[node_id]["category"].startswith("Analogist"), node_id
        assert info[node_id]["display_name"] and info[node_id]["display_name"] != node_id


def test_grid_nodes_around_the_hosts_inpainting_give_b_prime_at_bs_size(comfy_server):
    """Our grid nodes and the host's own inpainting path agree on the grid (no attention edits)."""
    inputs = comfy_server.workspace / "input"
    pattern(80, 64, seed=1).save(inputs / "plain_a.png")
    pattern(80, 64, seed=2).save(inputs / "plain_a_prime.png")
    pattern(48, 40, seed=3).save(inputs / "plain_b.png")  # B' comes back at B's own size
    result = comfy_server.run(grid_inpainting_prompt())
    assert result.ok, result.error_text() + "\n" + comfy_server.log_tail()
    images = result.images("12")
    assert len(images) == 1
    saved = Image.open(io.BytesIO(comfy_server.view(images[0])))
    assert saved.size == (48, 40)
    pixels = np.asarray(saved.convert("RGB"))
    assert pixels.std() > 0, "the decoded B' is flat"
    # The file on disk is the one the history names, with the graph stored in it.
    on_disk = comfy_server.workspace / "output" / images[0]["subfolder"] / images[0]["filename"]
    assert on_disk.exists()
    assert json.loads(Image.open(on_disk).info["prompt"])["11"]["class_type"] == "AnalogistGridCrop"


def test_broken_optional_dependency_leaves_comfyui_and_other_nodes_working(tmp_path):
    """An ``openai`` that raises on import disables only the GPT-4V node."""
    shim = tmp_path / "shim" / "openai"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('this openai install is broken (test)')\n")
    workspace = make_workspace(tmp_path / "comfyui")
    server = ComfyServer(workspace, env={"PYTHONPATH": str(shim.parent)}).start()
    try:
        info = server.object_info()
        log = server.log_text()
    finally:
        server.stop()
    assert "KSampler" in info, "ComfyUI's own nodes must still load"
    for node_id in PACK_NODES - {"AnalogistGPT4VPrompt"}:
        assert node_id in info, f"{node_id} missing:\n{log[-3000:]}"
    gpt4v = info.get("AnalogistGPT4VPrompt")
    if gpt4v is not None:  # registered as a disabled node that says why
        assert "openai" in gpt4v["description"].lower()
    assert "openai" in log.lower(), "the log must say why the node is disabled"
