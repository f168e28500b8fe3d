"""The diffusers-exact DDIM pair inside the real ComfyUI server, on the random SD1.5 checkpoint."""

from __future__ import annotations

import pytest
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

NODE_IDS = ("AnalogistDDIMSigmas", "AnalogistDDIMSampler")


def ddim_prompt(steps: int, strength: float) -> dict:
    """Checkpoint -> Analogist DDIM Sigmas + Sampler -> the host's SamplerCustom -> image."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint_name(0)}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red apple", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {
            "class_type": "AnalogistDDIMSigmas",
            "inputs": {"model": ["1", 0], "steps": steps, "strength": strength},
        },
        "6": {"class_type": "AnalogistDDIMSampler", "inputs": {}},
        "7": {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": ["1", 0], "add_noise": True, "noise_seed": 0, "cfg": 5.0,
                "positive": ["2", 0], "negative": ["3", 0], "sampler": ["6", 0],
                "sigmas": ["5", 0], "latent_image": ["4", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["1", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ddim"}},
    }  # fmt: skip


def test_ddim_nodes_are_listed_in_their_category(comfy_server):
    info = comfy_server.object_info()
    for node_id in NODE_IDS:
        assert node_id in info, f"not registered: {node_id}\n{comfy_server.log_tail()}"
        assert info[node_id]["category"] == "Analogist/sampling"
        assert info[node_id]["description"]


def test_samplercustom_with_the_ddim_pair_makes_an_image(comfy_server):
    result = comfy_server.run(ddim_prompt(steps=2, strength=1.0))
    assert result.ok, result.error_text() + "\n" + comfy_server.log_tail()
    assert len(result.images("9")) == 1


def test_a_strength_with_no_step_is_refused_by_name(comfy_server):
    result = comfy_server.run(ddim_prompt(steps=50, strength=0.01))
    assert not result.ok
    assert "strength: 0.01 of 50 steps leaves no step" in result.error_text()
