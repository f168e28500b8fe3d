"""MimicBrush through the real ComfyUI server: official-format files in its model folders.

One server for the module, with only what MimicBrush needs (no SD checkpoint): the goldens'
tiny random weights written as the official ``mimicbrush.bin`` and
``depth_anything_vitb14.pth``, a random full-size SD VAE under sd-vae-ft-mse's file name in
models/vae, the shipped example images in input/. Kept fast for a busy 2-core CPU: the
tiny UNets, 1 sampling step, PyTorch attention.

* the pack's three nodes around the host's own KSampler, VAE Decode and Save Image;
* the shipped workflows/mimicbrush.json and mimicbrush_texture.json converted as the
  frontend does (``ui_to_api``), steps overridden, queued end to end.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from comfyui_analogist.analogist_cli.workflow_format import nodes_of_type, set_widget, ui_to_api
from PIL import Image
from support import mimicbrush as smb
from support.comfy_server import ComfyServer, make_workspace

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
NODES = {"AnalogistMimicBrushLoader", "AnalogistMimicBrushApply", "AnalogistMimicBrushPaste"}
RUN_TIMEOUT = 900  # seconds; a run takes well under a minute on an idle 2-core CPU


@pytest.fixture(scope="module")
def mimicbrush_server(tmp_path_factory):
    files = smb.write_official_files(tmp_path_factory.mktemp("mimicbrush-files"))
    workspace = make_workspace(
        tmp_path_factory.mktemp("comfyui-mimicbrush"),
        models={
            "mimicbrush": [files["mimicbrush"]],
            "depth_anything": [files["depth"]],
            "vae": [smb.cached_sd_vae()],
        },
    )
    inputs = workspace / "input"
    target = smb.load_png("inputs/target.png")
    mask = smb.load_png("inputs/mask.png")
    # Load Image's MASK is 1 - alpha: the region to repaint is transparent.
    rgba = np.dstack([target, 255 - mask]).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(inputs / "mb_target.png")
    Image.fromarray(smb.load_png("inputs/reference.png")).save(inputs / "mb_reference.png")
    for image in (WORKFLOWS / "images").glob("*.png"):  # what the pack copies into input/
        shutil.copy(image, inputs / image.name)
    # PyTorch's SDPA: ComfyUI's CPU default (sub-quadratic, in Python chunks) takes 2-3x as
    # long on the tiny UNets' 4096-token attention at 512 px.
    server = ComfyServer(workspace, args=["--use-pytorch-cross-attention"]).start()
    server.info = server.object_info()
    yield server
    server.stop()


def prompt() -> dict:
    return {
        "1": {"class_type": "VAELoader", "inputs": {"vae_name": smb.SD_VAE_NAME}},
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
                "vae": ["1", 0],
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
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 0]}},
        "8": {
            "class_type": "AnalogistMimicBrushPaste",
            "inputs": {"images": ["7", 0], "target": ["3", 0], "mask": ["3", 1]},
        },
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "mb"}},
    }


def saved_pixels(server: ComfyServer, result, node_id: str) -> np.ndarray:
    (entry,) = result.images(node_id)
    return np.asarray(Image.open(io.BytesIO(server.view(entry))).convert("RGB")).astype(int)


def repainted(target_rgba: np.ndarray) -> np.ndarray:
    """Where the blurred composite mask of a Load Image target (alpha 0 = masked) is not 0."""
    from comfyui_analogist.analogist_mimicbrush import images

    mask = (255 - target_rgba[..., 3]).astype(np.uint8)
    return images.blur_alpha(images.binarize_mask(mask)) > 0


def test_mimicbrush_nodes_are_listed(mimicbrush_server):
    info = mimicbrush_server.info
    assert NODES <= info.keys(), mimicbrush_server.log_tail()
    loader = info["AnalogistMimicBrushLoader"]["input"]["required"]
    assert loader["mimicbrush"][0] == ["mimicbrush.bin"]
    assert "depth_anything/depth_anything_vitb14.pth" in loader["depth_model"][0]
    assert info["AnalogistMimicBrushApply"]["output"][-1] == "MIMICBRUSH_CROP"
    assert info["AnalogistMimicBrushPaste"]["input"]["optional"]["crop"][0] == "MIMICBRUSH_CROP"
    if "search_aliases" in info["AnalogistMimicBrushApply"]:  # 0.30.0's node search reads them
        assert "texture transfer" in info["AnalogistMimicBrushApply"]["search_aliases"]


def test_a_region_is_repainted_and_the_rest_kept(mimicbrush_server):
    result = mimicbrush_server.run(prompt(), timeout=RUN_TIMEOUT)
    assert result.ok, result.error_text() + "\n" + mimicbrush_server.log_tail()
    pixels = saved_pixels(mimicbrush_server, result, "9")
    target = smb.load_png("inputs/target.png").astype(int)
    rgba = np.dstack([target, 255 - smb.load_png("inputs/mask.png")])
    keep = ~repainted(rgba)
    assert pixels.shape == target.shape
    # Save Image truncates 255 * x: an unchanged pixel may come back one level lower.
    assert np.abs(pixels[keep] - target[keep]).max() <= 1
    assert np.abs(pixels[~keep] - target[~keep]).max() > 10


@pytest.mark.parametrize(
    ("name", "shape_control"), [("mimicbrush", False), ("mimicbrush_texture", True)]
)
def test_shipped_workflow_runs_end_to_end(mimicbrush_server, name, shape_control):
    workflow = json.loads((WORKFLOWS / f"{name}.json").read_text())
    info = mimicbrush_server.info
    # As shipped: the official sampler settings, the crop link, the file names of the note.
    shipped = ui_to_api(workflow, info)
    by_type = {v["class_type"]: (k, v["inputs"]) for k, v in shipped.items()}
    assert by_type["AnalogistDDIMSigmas"][1]["steps"] == 50
    assert by_type["AnalogistDDIMSigmas"][1]["strength"] == 1.0
    assert by_type["SamplerCustom"][1]["cfg"] == 5.0
    assert by_type["AnalogistMimicBrushApply"][1]["shape_control"] is shape_control
    apply_id = by_type["AnalogistMimicBrushApply"][0]
    assert by_type["AnalogistMimicBrushPaste"][1]["crop"] == [apply_id, 5]
    assert by_type["VAELoader"][1]["vae_name"] == smb.SD_VAE_NAME
    # CPU-size: 1 step (strength 1: it runs).
    (sigmas,) = nodes_of_type(workflow, "AnalogistDDIMSigmas")
    set_widget(workflow, sigmas["id"], "steps", 1, info)
    api = ui_to_api(workflow, info)
    result = mimicbrush_server.run(api, timeout=RUN_TIMEOUT)
    assert result.ok, result.error_text() + "\n" + mimicbrush_server.log_tail()
    save_id = next(k for k, v in api.items() if v["class_type"] == "SaveImage")
    pixels = saved_pixels(mimicbrush_server, result, save_id)
    target_name = next(
        v["inputs"]["image"]
        for k, v in api.items()
        if v["class_type"] == "LoadImage" and [k, 0] == api[apply_id]["inputs"]["target"]
    )
    assert target_name.startswith("mimicbrush_example_")
    rgba = np.asarray(Image.open(WORKFLOWS / "images" / target_name).convert("RGBA")).astype(int)
    keep = ~repainted(rgba)
    assert pixels.shape == rgba.shape[:2] + (3,)
    assert np.abs(pixels[keep] - rgba[..., :3][keep]).max() <= 1
    assert np.abs(pixels[~keep] - rgba[..., :3][~keep]).max() > 10


@pytest.mark.parametrize("name", ["mimicbrush", "mimicbrush_texture"])
def test_shipped_workflow_links_match_and_its_note_says_which_file_goes_where(name):
    wf = json.loads((WORKFLOWS / f"{name}.json").read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    for link_id, origin, slot, target, target_slot, kind in wf["links"]:
        assert nodes[origin]["outputs"][slot]["type"] == kind
        assert link_id in nodes[origin]["outputs"][slot]["links"]
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
    (note,) = [n["widgets_values"][0] for n in wf["nodes"] if n["type"] == "MarkdownNote"]
    for where in (
        "mimicbrush.bin",
        "models/mimicbrush/",
        "depth_anything_vitb14.pth",
        "models/depth_anything/",
        "models/vae/",
        smb.SD_VAE_NAME,
    ):
        assert where in note, where
    for node in wf["nodes"]:
        if node["type"] == "LoadImage":
            assert (WORKFLOWS / "images" / node["widgets_values"][0]).is_file()
