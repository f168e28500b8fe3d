"""The shipped workflows, end to end through the real ComfyUI server.

Each UI workflow from ``workflows/`` is converted to the API prompt the way the frontend
does it (``analogist.workflow_format.ui_to_api`` with the server's ``/object_info``), with
small settings for CPU (cells 64, so 128x128 grids; 1 sampling step) and the random
checkpoint, then queued. Where SAC and CAM fired is read by a test-only probe node
(``tests/support/patch_probe``) that the test graph connects to the KSampler's model and
result: it reports the patches' call counters per transformer block.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from comfyui_analogist.analogist_cli.workflow_format import nodes_of_type, set_widget, ui_to_api
from PIL import Image
from support.comfy_server import ComfyServer, make_workspace
from support.probe import PAPER_BLOCKS, probe_report, start_probe_server, with_probe
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
CELL = 64
STEPS = 1  # a full-size SD1.5 UNet step takes ~15 s on a 2-core CPU
ALIGNED_BLOCKS = sorted(["input:7:0", "input:8:0", "middle:0:0", "output:3:0"])  # 4..7


@pytest.fixture(scope="module")
def chat():
    from support.chat_server import ChatServer

    server = ChatServer().start()
    yield server
    server.close()


LORA_NAME = "random-sd15-lora.safetensors"


def random_sd15_lora(folder: Path) -> Path:
    """A random LoRA on every attention projection of SD1.5's UNet (names from a meta-device UNet)."""
    import torch
    from comfy import ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from support.lora import random_unet_lora, write_lora
    from support.sd15 import SD15_INPAINT_UNET

    with torch.device("meta"):
        unet = UNetModel(**SD15_INPAINT_UNET, device="meta", operations=ops.disable_weight_init)
    return write_lora(folder / LORA_NAME, random_unet_lora(unet, seed=5))


@pytest.fixture(scope="module")
def server(tmp_path_factory, sd15_checkpoint):
    from support.clip_vision import cached_clip_vision_file
    from support.controlnet import cached_sd15_controlnet

    models = tmp_path_factory.mktemp("models")
    workspace = make_workspace(
        tmp_path_factory.mktemp("comfyui-workflows"),
        models={
            "checkpoints": [sd15_checkpoint],
            "loras": [random_sd15_lora(models)],
            "controlnet": [cached_sd15_controlnet(0)],
            "clip_vision": [cached_clip_vision_file(0)],
        },
    )
    # No copying of the example images: the pack puts them into input/ when it loads
    # (example_inputs.py), so these runs prove the workflows run as shipped.
    comfy = start_probe_server(workspace)
    yield comfy
    comfy.stop()


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def small(workflow: dict, info: dict, **sampler) -> dict:
    """The workflow as shipped, with test-size settings and the random checkpoint."""
    for node in nodes_of_type(workflow, "CheckpointLoaderSimple"):
        set_widget(workflow, node["id"], "ckpt_name", checkpoint_name(0), info)
    for node in nodes_of_type(workflow, "AnalogistGridCompose"):
        set_widget(workflow, node["id"], "cell_width", CELL, info)
        set_widget(workflow, node["id"], "cell_height", CELL, info)
    for node in nodes_of_type(workflow, "KSampler"):
        set_widget(workflow, node["id"], "steps", STEPS, info)
        for name, value in sampler.items():
            set_widget(workflow, node["id"], name, value, info)
    return workflow


def bypass(workflow: dict, *kinds: str) -> dict:
    for node in workflow["nodes"]:
        if node["type"] in kinds:
            node["mode"] = 4
    return workflow


def run(server: ComfyServer, workflow: dict):
    prompt = with_probe(ui_to_api(workflow, server.info))
    result = server.run(prompt)
    assert result.ok, result.error_text() + "\n" + server.log_tail()
    return prompt, result


def saved_image(server: ComfyServer, result, prompt: dict) -> Image.Image:
    (save_id,) = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    (image,) = result.images(save_id)
    return Image.open(io.BytesIO(server.view(image)))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def assert_fired_on(report: dict, blocks: list[str]) -> None:
    assert report["sac"]["slot"] == "attn1" and report["cam"]["slot"] == "attn2_output_patch"
    for kind in ("sac", "cam"):
        assert report[kind]["registered"] == blocks, kind
        calls = report[kind]["calls"]
        assert sorted(calls) == blocks, f"{kind} fired on {sorted(calls)}, expected {blocks}"
        # Every block once per model evaluation: one per step when cond and uncond share a
        # batch (as here), two when ComfyUI splits them for lack of memory.
        assert len(set(calls.values())) == 1 and set(calls.values()) <= {STEPS, 2 * STEPS}, (
            f"{kind}: {calls}"
        )


@pytest.fixture(scope="module")
def manual_run(server):
    workflow = small(load("analogist_manual_prompt"), server.info)
    return run(server, workflow)


def test_manual_prompt_workflow_runs_with_sac_and_cam_on_the_paper_blocks(server, manual_run):
    prompt, result = manual_run
    image = saved_image(server, result, prompt)
    # Grid Crop restores B' to B's own size (the example B is 256x256), whatever the cell.
    assert image.size == (256, 256)
    assert pixels(image).std() > 0
    assert_fired_on(probe_report(result), PAPER_BLOCKS)
    # The shipped paper defaults reached the server unchanged (only steps and cells shrunk).
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert by_type["KSampler"]["cfg"] == 15.0 and by_type["KSampler"]["denoise"] == 0.98
    assert by_type["KSampler"]["sampler_name"] == "ddim"
    assert by_type["AnalogistSACPatch"]["sac_scale"] == 1.3
    assert (
        by_type["AnalogistSACPatch"]["start_layer"],
        by_type["AnalogistSACPatch"]["end_layer"],
    ) == (3, 11)
    assert (
        by_type["AnalogistCAMPatch"]["start_layer"] == 3
        and by_type["AnalogistCAMPatch"]["end_layer"] == 11
    )


def test_bypassing_sac_and_cam_changes_the_result(server, manual_run):
    prompt, result = manual_run
    patched = pixels(saved_image(server, result, prompt))
    workflow = bypass(
        small(load("analogist_manual_prompt"), server.info),
        "AnalogistSACPatch",
        "AnalogistCAMPatch",
    )
    plain_prompt, plain_result = run(server, workflow)
    # Bypassed like the frontend does it: the KSampler now takes the checkpoint's model.
    (sampler,) = [v for v in plain_prompt.values() if v["class_type"] == "KSampler"]
    assert plain_prompt[sampler["inputs"]["model"][0]]["class_type"] == "CheckpointLoaderSimple"
    assert probe_report(plain_result) == {}
    plain = pixels(saved_image(server, plain_result, plain_prompt))
    assert plain.shape == patched.shape
    assert np.abs(plain - patched).max() > 0, "SAC/CAM made no difference to the image"


def test_vlm_workflow_sends_the_labelled_grid_and_its_answer_becomes_the_prompt(server, chat):
    workflow = small(load("analogist"), server.info)
    (vlm,) = nodes_of_type(workflow, "AnalogistGPT4VPrompt")
    set_widget(workflow, vlm["id"], "base_url", chat.base_url, server.info)
    chat.default_text = "a pencil sketch of triangle"
    before = chat.count

    prompt, result = run(server, workflow)

    # The labelled grid went to the model once, as an image...
    assert chat.count == before + 1
    parts = chat.requests[-1].body["messages"][-1]["content"]
    assert any(p.get("type") == "image_url" for p in parts), "no image sent to the model"
    # ...its answer came back with the paper's suffix...
    expected = "a pencil sketch of triangle, best quality, extremely detailed"
    assert result.outputs[str(vlm["id"])]["text"] == [expected]
    # ...and the graph the server executed feeds that output into the positive encoder.
    executed = server.get_json(f"/history/{result.prompt_id}")[result.prompt_id]["prompt"][2]
    cond = next(v for v in executed.values() if v["class_type"] == "InpaintModelConditioning")
    positive = executed[cond["inputs"]["positive"][0]]
    assert positive["class_type"] == "CLIPTextEncode"
    assert positive["inputs"]["text"] == [str(vlm["id"]), 0]
    assert_fired_on(probe_report(result), PAPER_BLOCKS)
    assert saved_image(server, result, prompt).size == (256, 256)
    # The labelled grid is previewed at the grid's size.
    (preview,) = [
        k
        for k, v in prompt.items()
        if v["class_type"] == "PreviewImage"
        and prompt[v["inputs"]["images"][0]]["class_type"] == "AnalogistMarkAndArrow"
    ]
    (marked,) = result.images(preview)
    assert Image.open(io.BytesIO(server.view(marked))).size == (2 * CELL, 2 * CELL)


def test_aligned_with_b_workflow_swaps_a_prime_and_b_and_patches_blocks_4_to_7(server):
    workflow = small(load("analogist_aligned_with_b"), server.info)
    prompt, result = run(server, workflow)
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert by_type["AnalogistGridCompose"]["arrangement"] == "A aligned with B"
    assert by_type["KSampler"]["denoise"] == 0.8 and by_type["KSampler"]["cfg"] == 15.0
    assert by_type["AnalogistSACPatch"]["sac_scale"] == 1.3
    assert_fired_on(probe_report(result), ALIGNED_BLOCKS)
    strip_id = next(k for k, v in prompt.items() if v["class_type"] == "PreviewImage")
    (strip,) = result.images(strip_id)
    # A | A' | B | B' strip, one cell each, whatever the arrangement in the grid.
    assert Image.open(io.BytesIO(server.view(strip))).size == (4 * CELL, CELL)
    assert saved_image(server, result, prompt).size == (256, 256)


def test_lora_controlnet_workflow_runs_with_both_and_keeps_sac_and_cam(server):
    from support.controlnet import cached_sd15_controlnet

    workflow = small(load("analogist_lora_controlnet"), server.info)
    (lora,) = nodes_of_type(workflow, "LoraLoader")
    set_widget(workflow, lora["id"], "lora_name", LORA_NAME, server.info)
    (cnet,) = nodes_of_type(workflow, "ControlNetLoader")
    set_widget(
        workflow, cnet["id"], "control_net_name", cached_sd15_controlnet(0).name, server.info
    )
    prompt, result = run(server, workflow)
    # The LoRA sits between the checkpoint and SAC; the ControlNet conditions the sampler.
    sac = next(v for v in prompt.values() if v["class_type"] == "AnalogistSACPatch")
    assert prompt[sac["inputs"]["model"][0]]["class_type"] == "LoraLoader"
    cond = next(v for v in prompt.values() if v["class_type"] == "InpaintModelConditioning")
    assert prompt[cond["inputs"]["positive"][0]]["class_type"] == "ControlNetApplyAdvanced"
    assert "missing controlnet keys" not in server.log_text()
    assert_fired_on(probe_report(result), PAPER_BLOCKS)
    assert saved_image(server, result, prompt).size == (256, 256)


def test_best_of_n_workflow_samples_candidates_and_saves_the_best_scored(server):
    import re

    from support.clip_vision import clip_vision_name

    workflow = small(load("analogist_best_of_n"), server.info)
    (repeat,) = nodes_of_type(workflow, "RepeatLatentBatch")
    assert (
        ui_to_api(workflow, server.info)[str(repeat["id"])]["inputs"]["amount"] == 4
    )  # as shipped
    set_widget(workflow, repeat["id"], "amount", 3, server.info)  # CPU: 3 candidates are enough
    (loader,) = nodes_of_type(workflow, "CLIPVisionLoader")
    set_widget(workflow, loader["id"], "clip_name", clip_vision_name(0), server.info)
    prompt, result = run(server, workflow)
    assert_fired_on(probe_report(result), PAPER_BLOCKS)
    (rank_id,) = [k for k, v in prompt.items() if v["class_type"] == "AnalogistRankCandidates"]
    assert prompt[rank_id]["inputs"]["top_k"] == 1
    # The scores reach the UI (the node shows them), one line for the one B, best first.
    (line,) = result.outputs[rank_id]["text"]
    ranked = [(int(i), float(s)) for i, s in re.findall(r"#(\d+) (-?\d+\.\d+)", line)]
    assert sorted(i for i, _ in ranked) == [0, 1, 2]
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1 for s in scores)
    # Saved: the best one, at B's size; previewed: all of them, best first.
    best = pixels(saved_image(server, result, prompt))
    assert best.shape == (256, 256, 3)
    (preview_id,) = [
        k
        for k, v in prompt.items()
        if v["class_type"] == "PreviewImage"
        and prompt[v["inputs"]["images"][0]]["class_type"] == "AnalogistRankCandidates"
    ]
    previews = [pixels(Image.open(io.BytesIO(server.view(i)))) for i in result.images(preview_id)]
    assert len(previews) == 3
    assert np.array_equal(previews[0], best)
    assert any(np.abs(p - best).max() > 0 for p in previews[1:]), "the candidates are identical"
    # The frontend gets the script that shows the scores on the node.
    assert any(path.endswith("/js/rank_candidates.js") for path in server.get_json("/extensions"))


def test_region_workflow_changes_b_only_inside_its_region(server):
    """A mask on B: only that part of B' is sampled, and Grid Crop gives B back elsewhere."""
    workflow = small(load("analogist_region"), server.info)
    prompt, result = run(server, workflow)
    assert_fired_on(probe_report(result), PAPER_BLOCKS)
    (compose,) = [v for v in prompt.values() if v["class_type"] == "AnalogistGridCompose"]
    source = prompt[compose["inputs"]["b_region"][0]]
    assert source["class_type"] == "LoadImage" and compose["inputs"]["b_region"][1] == 1  # its MASK
    (cam,) = [v for v in prompt.values() if v["class_type"] == "AnalogistCAMPatch"]
    assert cam["inputs"]["text_only_in_region"] is True
    (crop,) = [v for v in prompt.values() if v["class_type"] == "AnalogistGridCrop"]
    feather = crop["inputs"]["feather"]
    out = pixels(saved_image(server, result, prompt))
    b = pixels(Image.open(WORKFLOWS / "images" / "analogist_example_b.png"))
    painted = Image.open(WORKFLOWS / "images" / source["inputs"]["image"])
    region = np.asarray(painted.getchannel("A")) < 128  # the mask editor's painted pixels
    assert out.shape == b.shape == (256, 256, 3) and 0 < region.mean() < 0.5
    near = region.copy()
    for _ in range(feather):  # chessboard dilation: the feather ring
        padded = np.pad(near, 1)
        near = np.zeros_like(near)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                near |= padded[dy : dy + 256, dx : dx + 256]
    # Outside region + feather: B's own pixels (SaveImage truncates 255 * x, so k may
    # come back as k - 1); inside: what the (random) model sampled, far from B.
    assert np.abs(out - b)[~near].max() <= 1
    assert np.abs(out - b)[region].mean() > 10


def test_two_examples_workflow_puts_both_pairs_in_the_grid_and_patches_the_paper_blocks(server):
    workflow = small(load("analogist_two_examples"), server.info)
    prompt, result = run(server, workflow)
    (pair,) = [v for v in prompt.values() if v["class_type"] == "AnalogistExamplePair"]
    loads = {prompt[pair["inputs"][r][0]]["inputs"]["image"] for r in ("a", "a_prime")}
    assert loads == {"analogist_example_a2.png", "analogist_example_a2_prime.png"}
    assert_fired_on(probe_report(result), PAPER_BLOCKS)
    strip_id = next(k for k, v in prompt.items() if v["class_type"] == "PreviewImage")
    (strip,) = result.images(strip_id)
    # A1 | A1' | A2 | A2' | B | B': the grid had three rows of cells.
    assert Image.open(io.BytesIO(server.view(strip))).size == (6 * CELL, CELL)
    assert saved_image(server, result, prompt).size == (256, 256)


def test_flux_fill_workflow_validates_on_the_server_but_for_its_model_files(server):
    """analogist_flux_fill.json queued as shipped: the real server's validation (node types,
    link types, every widget value) passes everywhere except the four Flux model files it
    names, which this machine lacks (no Flux weights here; a random T5-XXL alone would be
    ~9.5 GB). Its SAC/CAM settings run in process in tests/nodes/test_flux_patches.py."""
    if "FluxGuidance" not in server.info:
        pytest.skip("this ComfyUI (0.0.1) has no Flux nodes; the Flux workflow is for 0.3.4x+")
    prompt = ui_to_api(load("analogist_flux_fill"), server.info)
    result = server.run(prompt)
    assert not result.ok
    errors = [
        (prompt[node]["class_type"], e["type"], e.get("extra_info", {}).get("input_name"))
        for node, entry in result.node_errors.items()
        for e in entry["errors"]
    ]
    assert sorted(errors) == [
        ("DualCLIPLoader", "value_not_in_list", "clip_name1"),
        ("DualCLIPLoader", "value_not_in_list", "clip_name2"),
        ("UNETLoader", "value_not_in_list", "unet_name"),
        ("VAELoader", "value_not_in_list", "vae_name"),
    ], result.error_text()
