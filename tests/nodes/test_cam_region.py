"""CAM "text only in the region": only the B' tokens inside B's region of interest listen.

The oracle is naive: a token of an ``h x w`` map is inside when any grid pixel it covers
is in the region mapped into B' (computed by ``support.region`` with exact fractions);
cross-attention is computed with the full probability matrix and the rows of A, A', B
and of the B' tokens outside the region zeroed.
"""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_attn.blocks import transformer_block_keys
from comfyui_analogist.analogist_attn.cam import cam_projected_output, cam_projected_output_rows
from comfyui_analogist.analogist_attn.geometry import RegionTokensInside, regions_for_block
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENTS
from comfyui_analogist.analogist_pixels.region import latent_regions
from comfyui_analogist.nodes import grid
from comfyui_analogist.nodes.attention import AnalogistApply, AnalogistCAMPatch, AnalogistSACPatch
from comfyui_analogist.nodes.patching import PASSES
from support.grid_images import image, pattern
from support.region import naive_b_prime_region, naive_tokens_inside
from support.sd15 import tiny_inpaint_model_patcher

CELL = 64  # a 128 px grid: latent 16, token maps 16, 8, 4, 2
LATENT = 2 * CELL // 8
CONTEXT_DIM = 64
A, A_PRIME = pattern(120, 100, seed=0), pattern(90, 130, seed=1)
B, B2 = pattern(300, 200, seed=2), pattern(300, 200, seed=3)


def region_box(x0, y0, x1, y1):
    mask = torch.zeros(1, 200, 300)
    mask[:, y0:y1, x0:x1] = 1.0
    return mask


# Two grids, two different regions: top-left of B, and a thin bar at B's right.
REGIONS = torch.cat([region_box(0, 0, 120, 90), region_box(280, 20, 296, 190)])


def layout_of(region, bs=(B,), arrangement=ARRANGEMENTS[0], examples=None):
    return grid.AnalogistGridCompose().compose(
        image(A),
        image(A_PRIME),
        image(*bs),
        CELL,
        CELL,
        2,
        "stretch",
        arrangement,
        examples=examples,
        b_region=region,
    )[3]


def naive_inside(layout, region, index, h, w):
    pixels = naive_b_prime_region(region.numpy() >= 0.5, layout.b_placements[index], layout)
    return torch.from_numpy(naive_tokens_inside(pixels, h, w))


@pytest.fixture(scope="module")
def base_model():
    return tiny_inpaint_model_patcher(seed=0)


def cam(model, layout, start=0, end=16, text_only_in_region=True):
    return AnalogistCAMPatch().patch(
        model, layout, start, end, 0.0, 1.0, PASSES[0], text_only_in_region=text_only_in_region
    )[0]


def unet_call(model, latents=1, seed=0, size=(LATENT, LATENT)):
    """One UNet evaluation of ``latents`` latents (``size``: latent h, w), cond then uncond chunk."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * latents, 4, *size, generator=gen)
    concat = torch.randn(2 * latents, 5, *size, generator=gen)
    context = torch.randn(2 * latents, 77, CONTEXT_DIM, generator=gen)
    sigma = torch.full((2 * latents,), 5.0)
    options = dict(model.model_options["transformer_options"])
    options.update(cond_or_uncond=[0, 1], sigmas=sigma)
    with torch.no_grad():
        return model.model.apply_model(
            x, sigma, c_concat=concat, c_crossattn=context, transformer_options=options
        )


def naive_region_cam(model, layout, masks, blocks):
    """``model`` with a naive cross-attention replace on ``blocks``: full probabilities,
    rows of A, A', B and of B' tokens outside the region zeroed (entry e: latent
    e mod L, grid latent mod G)."""
    grids = len(layout.b_regions)

    def naive(q, k, v, extra):
        regions = regions_for_block(layout.geometry, extra["original_shape"], q.shape[1], q.device)
        heads = extra["n_heads"]
        batch, tokens, channels = q.shape
        qh = q.reshape(batch, tokens, heads, -1).transpose(1, 2)
        kh = k.reshape(batch, k.shape[1], heads, -1).transpose(1, 2)
        vh = v.reshape(batch, v.shape[1], heads, -1).transpose(1, 2)
        probs = (qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5).softmax(-1)
        latents = batch // len(extra["cond_or_uncond"])
        for entry in range(batch):
            g = (entry % latents) % grids
            inside = naive_inside(layout, masks[g % masks.shape[0]], g, regions.h, regions.w)
            drop = torch.ones(tokens, dtype=torch.bool)
            drop[regions.b_prime[inside[regions.b_prime]]] = False
            probs[entry, :, drop, :] = 0
        return (probs @ vh).transpose(1, 2).reshape(batch, tokens, -1)

    patched = model.clone()
    for key in blocks:
        patched.set_model_attn2_replace(naive, *key)
    return patched


def test_inside_tokens_at_every_map_size_equal_the_naive_definition():
    layout = layout_of(REGIONS, bs=(B, B2))
    inside = RegionTokensInside(latent_regions(layout))
    for h in (16, 8, 4, 2):
        got = inside.inside(h, h)
        for g in range(2):
            want = naive_inside(layout, REGIONS[g], g, h, h)
            assert torch.equal(got[g], want), (h, g)
    # A thin bar still reaches a token at every size; the box covers part of B' only.
    assert all(int(inside.inside(h, h)[1].sum()) > 0 for h in (16, 8, 4, 2))
    b_prime_16 = regions_for_block(layout.geometry, [1, 4, 16, 16], 256).b_prime
    assert 0 < int(inside.inside(16, 16)[0][b_prime_16].sum()) < b_prime_16.numel()


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_patched_unet_equals_naive_region_cam_on_every_level(base_model, arrangement):
    region = REGIONS[:1]
    layout = layout_of(region, arrangement=arrangement)
    blocks = transformer_block_keys(base_model.model)
    got = unet_call(cam(base_model, layout))
    want = unet_call(naive_region_cam(base_model, layout, region, blocks))
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    paper_cam = unet_call(cam(base_model, layout, text_only_in_region=False))
    assert (got - paper_cam).abs().max() > 1e-3 * paper_cam.abs().max(), (
        "the option changed nothing"
    )


def test_per_grid_regions_follow_each_batch_entry_through_the_unet(base_model):
    layout = layout_of(REGIONS, bs=(B, B2))
    blocks = transformer_block_keys(base_model.model)
    # k = 2 samples of each of the 2 grids: latents 0..3 are grids 0, 1, 0, 1.
    got = unet_call(cam(base_model, layout), latents=4)
    want = unet_call(naive_region_cam(base_model, layout, REGIONS, blocks), latents=4)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_option_off_or_paper_layout_is_exactly_todays_cam(base_model):
    with_region = layout_of(REGIONS[:1])
    plain_layout = grid.AnalogistGridCompose().compose(
        image(A), image(A_PRIME), image(B), CELL, CELL, 2, "stretch", ARRANGEMENTS[0]
    )[3]
    today = unet_call(
        AnalogistCAMPatch().patch(base_model, plain_layout, 0, 16, 0.0, 1.0, PASSES[0])[0]
    )
    off = unet_call(cam(base_model, with_region, text_only_in_region=False))
    assert torch.equal(today, off)


def test_option_on_without_a_region_is_a_clear_error(base_model):
    plain_layout = grid.AnalogistGridCompose().compose(
        image(A), image(A_PRIME), image(B), CELL, CELL, 2, "stretch", ARRANGEMENTS[0]
    )[3]
    with pytest.raises(
        ValueError, match="text_only_in_region is on but the layout has no region.*b_region"
    ):
        cam(base_model, plain_layout)


def test_rows_version_with_plain_keep_equals_todays_function():
    layout = layout_of(REGIONS[:1])
    regions = regions_for_block(layout.geometry, [2, 4, 16, 16], 256)
    out = torch.randn(2, 256, 8)
    zero = torch.randn(8)
    mask = torch.tensor([True, False])
    assert torch.equal(
        cam_projected_output_rows(out, regions.cam_keep, zero, mask),
        cam_projected_output(out, regions, zero, mask),
    )


def test_latent_batch_not_a_multiple_of_the_grids_is_a_clear_error():
    layout = layout_of(REGIONS, bs=(B, B2))
    inside = RegionTokensInside(latent_regions(layout))
    regions = regions_for_block(layout.geometry, [3, 4, 16, 16], 256)
    with pytest.raises(ValueError, match="cannot be matched to the layout's 2 grids"):
        inside.keep_rows(regions.cam_keep, regions.b_prime, 16, 16, batch=6, chunks=2)


def test_cam_declares_the_option_with_a_tooltip_and_default_off():
    spec = AnalogistCAMPatch.INPUT_TYPES()["optional"]["text_only_in_region"]
    assert spec[0] == "BOOLEAN" and spec[1]["default"] is False and "region" in spec[1]["tooltip"]


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_region_cam_with_two_example_pairs_equals_the_naive_definition(base_model, arrangement):
    """Several example pairs and a region together: the grid is 3 cells by 2, B' is the
    last row's (column's) second cell, and only its tokens in the region hear the text."""
    (examples,) = grid.AnalogistExamplePair().add(
        image(pattern(80, 80, seed=7)), image(pattern(80, 80, seed=8))
    )
    region = REGIONS[:1]
    layout = layout_of(region, arrangement=arrangement, examples=examples)
    assert layout.pairs == 2
    size = (layout.grid_height // 8, layout.grid_width // 8)
    blocks = transformer_block_keys(base_model.model)
    got = unet_call(cam(base_model, layout), size=size)
    want = unet_call(naive_region_cam(base_model, layout, region, blocks), size=size)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    paper_cam = unet_call(cam(base_model, layout, text_only_in_region=False), size=size)
    assert (got - paper_cam).abs().max() > 1e-3 * paper_cam.abs().max(), (
        "the option changed nothing"
    )


def test_the_combined_node_with_a_region_equals_sac_then_region_cam(base_model):
    layout = layout_of(REGIONS[:1])
    settings = (0, 16, 0.0, 1.0, PASSES[0])
    sac = AnalogistSACPatch().patch(base_model, layout, 1.3, *settings)[0]
    chained = cam(sac, layout)
    combined = AnalogistApply().patch(base_model, layout, 1.3, *settings, text_only_in_region=True)[
        0
    ]
    assert torch.equal(unet_call(combined), unet_call(chained))
