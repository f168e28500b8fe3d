"""SACPatch and CAMPatch on SDXL inpainting (in-process host, toy-width SDXL UNet).

The model is ComfyUI's own SDXL class around a UNet of SDXL's real block structure (70
transformer blocks: 2 per block at latent/2, 10 per block at latent/4 and in the middle)
with 9 input channels; the naive reference patches (full logit matrix) are the oracle.
"""

from __future__ import annotations

import logging

import pytest
import torch
from comfyui_analogist.analogist_attn.blocks import paper_layer_range, transformer_block_keys
from comfyui_analogist.analogist_pixels.layout import make_layout
from comfyui_analogist.nodes.attention import AnalogistCAMPatch, AnalogistSACPatch
from comfyui_analogist.nodes.patching import PASSES
from support.reference_patch import reference_patched
from support.sdxl import CONTEXT_DIM, POOLED_DIM, tiny_sdxl_inpaint_model_patcher

SDXL_PAPER = (2, 66)  # input 5; input 7, 8; middle; output 0..2; output 3


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl_inpaint_model_patcher(seed=0)


def sac(model, layout, start=0, end=0, scale=1.3):
    return AnalogistSACPatch().patch(model, layout, scale, start, end, 0.0, 1.0, PASSES[0])[0]


def cam(model, layout, start=0, end=0):
    return AnalogistCAMPatch().patch(model, layout, start, end, 0.0, 1.0, PASSES[0])[0]


def unet_call(model, latent: int, seed: int = 0):
    """One UNet evaluation at batch 2 (cond + uncond) with SDXL's conditioning."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, latent, latent, generator=gen)
    concat = torch.randn(2, 5, latent, latent, generator=gen)
    context = torch.randn(2, 77, CONTEXT_DIM, generator=gen)
    adm = torch.randn(2, 2816, generator=gen)
    sigma = torch.full((2,), 5.0)
    options = dict(model.model_options["transformer_options"])
    options.update(cond_or_uncond=[0, 1], sigmas=sigma)
    with torch.no_grad():
        return model.model.apply_model(
            x, sigma, c_concat=concat, c_crossattn=context, y=adm, transformer_options=options
        )


def patches(model):
    options = model.model_options["transformer_options"]
    (cam_fn,) = [
        p
        for p in options["patches"]["attn2_output_patch"]
        if getattr(p, "analogist_kind", None) == "cam"
    ]
    return options["patches_replace"]["attn1"], cam_fn


def test_sdxl_has_70_blocks_and_the_paper_levels_are_2_to_65(sdxl):
    keys = transformer_block_keys(sdxl.model)
    assert len(keys) == 70
    assert paper_layer_range(sdxl.model) == SDXL_PAPER
    assert keys[2] == ("input", 5, 0) and keys[65] == ("output", 3, 1)


@pytest.mark.parametrize(("latent", "cell"), [(64, 256), (128, 512)])
def test_patched_sdxl_equals_naive_reference_at_the_paper_levels(sdxl, latent, cell, caplog):
    """end_layer 0 picks the paper's levels; fast SAC + CAM equal the full-matrix
    definitions there, on a 512 grid and on SDXL's own 1024 grid (latent 128)."""
    layout = make_layout(cell_width=cell, cell_height=cell)
    with caplog.at_level(logging.INFO, logger="analogist"):
        fast = cam(sac(sdxl, layout), layout)
    assert "Analogist SAC on layers 2..65 of 70 (end_layer 0: the paper's levels" in caplog.text
    assert "input 5 (layers 2-3, latent/2), input 7 (layers 4-13, latent/4)" in caplog.text
    assert (
        "middle (layers 24-33, latent/4)" in caplog.text
        and "output 3 (layers 64-65, latent/2)" in caplog.text
    )
    blocks = transformer_block_keys(sdxl.model)[slice(*SDXL_PAPER)]
    got = unet_call(fast, latent)
    want = unet_call(reference_patched(sdxl, layout, blocks), latent)
    plain = unet_call(sdxl, latent)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert (got - plain).abs().max() > 1e-3 * plain.abs().max(), "the patches changed nothing"
    sac_slots, cam_fn = patches(fast)
    assert set(sac_slots) == set(blocks)
    assert set(sac_slots[blocks[0]].calls) == set(blocks) and set(cam_fn.calls) == set(blocks)


def test_patches_fire_on_exactly_the_chosen_blocks_while_sampling(sdxl):
    import comfy.sample

    layout = make_layout(cell_width=128, cell_height=128)
    keys = transformer_block_keys(sdxl.model)
    model = cam(sac(sdxl, layout, start=0, end=6), layout, start=60, end=70)
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 4, 32, 32, generator=gen)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 16:, 16:] = 1.0
    extra = {"concat_latent_image": latent, "concat_mask": mask, "width": 256, "height": 256}

    def cond():
        return [
            [
                torch.randn(1, 77, CONTEXT_DIM, generator=gen),
                {**extra, "pooled_output": torch.randn(1, POOLED_DIM, generator=gen)},
            ]
        ]

    out = comfy.sample.sample(
        model,
        torch.randn(latent.shape, generator=gen),
        2,
        5.0,
        "euler",
        "normal",
        cond(),
        cond(),
        latent,
        denoise=1.0,
        disable_pbar=True,
        seed=1,
    )
    assert torch.isfinite(out).all()
    sac_slots, cam_fn = patches(model)
    assert set(sac_slots) == set(keys[0:6])
    assert set(sac_slots[keys[0]].calls) == set(keys[0:6])  # input 4, 5 (latent/2), input 7 (1/4)
    assert set(cam_fn.calls) == set(keys[60:70])  # output 2 (latent/4), output 3..5 (1/2)


def test_explicit_sd15_paper_values_still_mean_layers_3_to_10(sdxl, caplog):
    layout = make_layout(cell_width=128, cell_height=128)
    with caplog.at_level(logging.INFO, logger="analogist"):
        model = sac(sdxl, layout, start=3, end=11)
    assert set(patches_replace_keys(model)) == set(transformer_block_keys(sdxl.model)[3:11])
    assert (
        "on layers 3..10 of 70: input 5 (layer 3, latent/2), input 7 (layers 4-10, latent/4)"
        in caplog.text
    )


def patches_replace_keys(model):
    return model.model_options["transformer_options"]["patches_replace"]["attn1"]


def test_layer_range_beyond_70_lists_the_valid_range(sdxl):
    layout = make_layout(cell_width=128, cell_height=128)
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.69.*end_layer to 0"):
        sac(sdxl, layout, start=3, end=71)


def test_shipped_sdxl_workflow_patches_a_sdxl_model_on_the_paper_levels(sdxl):
    """analogist_sdxl.json, in process: the frontend's conversion with the host's real node
    definitions, its GridCompose run on the shipped example images, its SAC and CAM
    settings applied to the SDXL model, one UNet call on the grid's latent. (The server
    cannot load a toy-width SDXL checkpoint, so this is not run through it.)"""
    import json

    import numpy as np
    from comfyui_analogist.analogist_cli.workflow_format import ui_to_api
    from comfyui_analogist.nodes.grid import AnalogistGridCompose
    from PIL import Image
    from support.workflows import WORKFLOWS as workflows
    from support.workflows import workflow_builder

    builder = workflow_builder()
    prompt = ui_to_api(
        json.loads((workflows / "analogist_sdxl.json").read_text()), builder.node_definitions()
    )
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert by_type["CheckpointLoaderSimple"]["ckpt_name"] == builder.SDXL_CHECKPOINT

    def image(name):
        pixels = (
            np.asarray(Image.open(workflows / "images" / name).convert("RGB"), np.float32) / 255
        )
        return torch.from_numpy(pixels)[None]

    loads = {
        node["_meta"]["title"]: node["inputs"]["image"]
        for node in prompt.values()
        if node["class_type"] == "LoadImage"
    }
    grid_inputs = {
        k: v for k, v in by_type["AnalogistGridCompose"].items() if not isinstance(v, list)
    }
    grid, _, _, layout = AnalogistGridCompose().compose(
        image(loads["A (example, before)"]),
        image(loads["A' (example, after)"]),
        image(loads["B (to change)"]),
        **grid_inputs,
    )
    assert grid.shape[1:3] == (1024, 1024)
    widgets = {
        kind: {k: v for k, v in by_type[kind].items() if not isinstance(v, list)}
        for kind in ("AnalogistSACPatch", "AnalogistCAMPatch")
    }
    model = AnalogistSACPatch().patch(sdxl, layout, **widgets["AnalogistSACPatch"])[0]
    model = AnalogistCAMPatch().patch(model, layout, **widgets["AnalogistCAMPatch"])[0]
    out = unet_call(model, latent=grid.shape[1] // 8)
    assert torch.isfinite(out).all()
    chosen = transformer_block_keys(sdxl.model)[slice(*paper_layer_range(sdxl.model))]
    sac_slots, cam_fn = patches(model)
    assert set(sac_slots) == set(chosen) == set(sac_slots[chosen[0]].calls) == set(cam_fn.calls)
