"""MimicBrush through the real ComfyUI server: official-format files in its model folders,
the pack's three nodes around the host's own KSampler, VAE Decode and Save Image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from support import mimicbrush as smb

NODES = {"AnalogistMimicBrushLoader", "AnalogistMimicBrushApply", "AnalogistMimicBrushPaste"}


@pytest.fixture(scope="module")
def mimicbrush_server(comfy_server, tmp_path_factory):
    files = smb.write_official_files(tmp_path_factory.mktemp("mimicbrush-files"))
    for folder, path in (("mimicbrush", files["mimicbrush"]), ("depth_anything", files["depth"])):
        target = comfy_server.workspace / "models" / folder
        target.mkdir(parents=True, exist_ok=True)
        if not (target / path.name).exists():
            (target / path.name).symlink_to(path)
    inputs = comfy_server.workspace / "input"
    target = smb.load_png("inputs/target.png")
    mask = smb.load_png("inputs/mask.png")
    # Load Image's MASK is 1 - alpha: the region to repaint is transparent.
    rgba = np.dstack([target, 255 - mask]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(inputs / "mb_target.png")
    Image.fromarray(smb.load_png("inputs/reference.png")).save(inputs / "mb_reference.png")
    return comfy_server


def prompt(checkpoint: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {
            "class_type": "AnalogistMimicBrushLoader",
            "inputs": {
                "mimicbrush": "mimicbrush.bin",
                "depth_model": "depth_anything/depth_anything_vitb14.pth",
            },
        },
        "3": {"class_type": "LoadImage", "inputs": {"image": "mb_target.png"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "mb_reference.png"}},
        "5": {
            "class_type": "AnalogistMimicBrushApply",
            "inputs": {
                "model": ["2", 0],
                "mimicbrush": ["2", 1],
                "vae": ["1", 2],
                "target": ["3", 0],
                "mask": ["3", 1],
                "reference": ["4", 0],
                "shape_control": True,
                "samples_per_target": 1,
                "seed": 1,
            },
        },
        "6": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["5", 0],
                "positive": ["5", 1],
                "negative": ["5", 2],
                "latent_image": ["5", 3],
                "seed": 0,
                "steps": 1,
                "cfg": 5.0,
                "sampler_name": "ddim",
                "scheduler": "ddim_uniform",
                "denoise": 1.0,
            },
        },
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {
            "class_type": "AnalogistMimicBrushPaste",
            "inputs": {"images": ["7", 0], "target": ["3", 0], "mask": ["3", 1]},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "mb"}},
    }


def test_mimicbrush_nodes_are_listed(mimicbrush_server):
    info = mimicbrush_server.object_info()
    assert NODES <= info.keys(), mimicbrush_server.log_tail()
    loader = info["AnalogistMimicBrushLoader"]["input"]["required"]
    assert loader["mimicbrush"][0] == ["mimicbrush.bin"]
    assert "depth_anything/depth_anything_vitb14.pth" in loader["depth_model"][0]


def test_a_region_is_repainted_and_the_rest_kept(mimicbrush_server, sd15_checkpoint):
    # On 2 busy CPU cores one step at 512 px (sub-quadratic attention) takes minutes.
    result = mimicbrush_server.run(prompt(sd15_checkpoint.name), timeout=1500)
    assert result.ok, result.error_text() + "\n" + mimicbrush_server.log_tail()
    saved = result.images("9")
    assert len(saved) == 1
    target = smb.load_png("inputs/target.png").astype(int)
    from comfyui_analogist.analogist_mimicbrush import images

    keep = images.blur_alpha(images.binarize_mask(smb.load_png("inputs/mask.png"))) == 0
    for entry in saved:
        pixels = np.asarray(Image.open(io.BytesIO(mimicbrush_server.view(entry))).convert("RGB"))
        assert pixels.shape == target.shape
        # Save Image truncates 255 * x: an unchanged pixel may come back one level lower.
        assert np.abs(pixels.astype(int)[keep] - target[keep]).max() <= 1
        assert np.abs(pixels.astype(int)[~keep] - target[~keep]).max() > 10
