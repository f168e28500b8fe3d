"""The pack inside the real ComfyUI server: it loads, its nodes are listed, and the host
can run a plain SD1.5 inpainting workflow on the random checkpoint."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from support.comfy_server import ComfyServer, make_workspace
from support.images import pattern
from support.sd15 import checkpoint_name

CHECKPOINT_NAME = checkpoint_name(0)

pytestmark = pytest.mark.host

PACK_NODES = {
    "AnalogistGridCompose",
    "AnalogistMarkAndArrow",
    "AnalogistGridCrop",
    "AnalogistSACPatch",
    "AnalogistCAMPatch",
    "AnalogistGPT4VPrompt",
}


def plain_inpainting_prompt(image_name: str, steps: int = 4) -> dict:
    """CheckpointLoaderSimple -> InpaintModelConditioning -> KSampler -> VAEDecode -> SaveImage."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT_NAME}},
        "2": {"class_type": "LoadImage", "inputs": {"image": image_name}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red apple", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {
            "class_type": "InpaintModelConditioning",
            "inputs": {"positive": ["3", 0], "negative": ["4", 0], "vae": ["1", 2], "pixels": ["2", 0], "mask": ["2", 1],
                       # 0.30.0: keep everything outside the mask (0.0.1 always did; it ignores this)
                       "noise_mask": True},
        },
        "6": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0], "seed": 0, "steps": steps, "cfg": 7.5, "sampler_name": "ddim",
                "scheduler": "normal", "positive": ["5", 0], "negative": ["5", 1],
                "latent_image": ["5", 2], "denoise": 0.98,
            },
        },
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "plain"}},
    }


def write_masked_grid(server: ComfyServer, name: str, size: int = 128) -> None:
    """An RGBA grid whose bottom-right quadrant is transparent: LoadImage's mask = 1 there."""
    rgba = pattern(size, size, seed=3).convert("RGBA")
    alpha = np.full((size, size), 255, np.uint8)
    alpha[size // 2 :, size // 2 :] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(server.workspace / "input" / name)


def test_pack_nodes_are_listed_in_object_info(comfy_server):
    info = comfy_server.object_info()
    missing = PACK_NODES - info.keys()
    assert not missing, f"not registered: {sorted(missing)}\n{comfy_server.log_tail()}"
    for node_id in PACK_NODES:
        assert info[node_id]["category"].startswith("Analogist"), node_id
        assert info[node_id]["display_name"] and info[node_id]["display_name"] != node_id


def test_plain_inpainting_workflow_saves_an_image(comfy_server):
    write_masked_grid(comfy_server, "plain_grid.png")
    result = comfy_server.run(plain_inpainting_prompt("plain_grid.png"))
    assert result.ok, result.error_text() + "\n" + comfy_server.log_tail()
    images = result.images("8")
    assert len(images) == 1
    saved = Image.open(io.BytesIO(comfy_server.view(images[0])))
    assert saved.size == (128, 128)
    pixels = np.asarray(saved.convert("RGB"))
    assert pixels.std() > 0, "the decoded image is flat"
    # The file on disk is the one the history names, with the graph stored in it.
    on_disk = comfy_server.workspace / "output" / images[0]["subfolder"] / images[0]["filename"]
    assert on_disk.exists()
    assert "KSampler" in json.loads(Image.open(on_disk).info["prompt"])["6"]["class_type"]


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
