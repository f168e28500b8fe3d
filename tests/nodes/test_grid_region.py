"""Region of interest on B: Grid Compose's b_region mask, Grid Crop's composite over B.

The oracle for the mask is written from the definition in ``analogist_attn/region.py``
with exact fractions and loops: a B' pixel is in the region when the part of B it was
resampled from (its footprint, through the same placement as B) touches a region pixel;
the inpainting mask is that grown to whole 8x8 px latent pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comfyui_analogist.analogist_pixels import grid as grid_math
from comfyui_analogist.analogist_pixels import region as region_math
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENTS, FITS, GridLayout
from comfyui_analogist.nodes import grid
from support.grid_images import image, pattern
from support.region import naive_b_prime_region, naive_latent_blocks

compose = grid.AnalogistGridCompose().compose
crop = grid.AnalogistGridCrop().crop

A = pattern(120, 100, seed=0)
A_PRIME = pattern(90, 130, seed=1)
B = pattern(300, 200, seed=2, square=24)


def box(
    width: int, height: int, x0: int, y0: int, x1: int, y1: int, batch: int = 1
) -> torch.Tensor:
    mask = torch.zeros(batch, height, width)
    mask[:, y0:y1, x0:x1] = 1.0
    return mask


def disc(width: int, height: int, cx: float, cy: float, r: float) -> torch.Tensor:
    """A soft-edged disc (values between 0 and 1 at its rim), as a blurred brush gives."""
    y, x = np.mgrid[0:height, 0:width]
    distance = np.hypot(x + 0.5 - cx, y + 0.5 - cy)
    return torch.from_numpy(np.clip(r + 0.5 - distance, 0.0, 1.0)).float()[None]


def composed(mask, b=B, fit="stretch", arrangement=ARRANGEMENTS[0], cell=256, a=A, a_prime=A_PRIME):
    return compose(
        image(a),
        image(a_prime),
        image(*b) if isinstance(b, list) else image(b),
        cell,
        cell,
        2,
        fit,
        arrangement,
        b_region=mask,
    )


def dilate(region: np.ndarray, steps: int) -> np.ndarray:
    """Chessboard dilation by ``steps`` px, by shifting (independent of the node's pooling)."""
    out = region.copy()
    for _ in range(steps):
        padded = np.pad(out, 1)
        grown = np.zeros_like(out)
        for dy in (0, 1, 2):
            for dx in (0, 1, 2):
                grown |= padded[dy : dy + out.shape[0], dx : dx + out.shape[1]]
        out = grown
    return out


# --- Grid Compose --------------------------------------------------------------------------


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("fit", FITS)
def test_mask_is_the_region_mapped_into_b_prime_in_whole_latent_pixels(fit, arrangement):
    region = disc(300, 200, 170.3, 90.0, 37.0) + box(300, 200, 20, 150, 23, 190)  # a 3 px bar too
    region = region.clamp(0, 1)
    grids, blank, mask, layout = composed(region, fit=fit, arrangement=arrangement)
    placement = layout.b_placements[0]
    pixels_in = naive_b_prime_region(region[0].numpy() >= 0.5, placement, layout)
    expected = naive_latent_blocks(pixels_in)
    assert mask.shape == (1, 512, 512) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) == {0.0, 1.0}
    assert np.array_equal(mask[0].numpy() == 1.0, expected)
    # Only inside the B' cell, and far smaller than it.
    cell = layout.cell("b_prime")
    assert mask[0, cell.y : cell.bottom, cell.x : cell.right].sum() == mask.sum()
    assert 0 < mask.sum() < 0.3 * cell.width * cell.height
    # The grids are the ones without a region (B' starts as B everywhere).
    plain_grid, plain_blank, plain_mask, plain_layout = composed(
        None, fit=fit, arrangement=arrangement
    )
    assert torch.equal(grids, plain_grid) and torch.equal(blank, plain_blank)
    assert plain_layout.b_regions == () and len(layout.b_regions) == 1
    assert layout.b_placements == plain_layout.b_placements


def test_the_latent_mask_comfyui_makes_from_it_is_exactly_binary():
    """InpaintModelConditioning's noise mask is a bilinear resize to the latent: whole
    latent pixels survive it as exact 0/1, so the sampler keeps everything outside."""
    _, _, mask, _ = composed(box(300, 200, 97, 41, 151, 133))
    latent = torch.nn.functional.interpolate(mask[:, None], size=(64, 64), mode="bilinear")
    assert set(latent.unique().tolist()) == {0.0, 1.0}
    blocks = mask[0].reshape(64, 8, 64, 8).amax(dim=(1, 3))
    assert torch.equal(latent[0, 0], blocks)


def test_one_mask_for_all_b_and_one_mask_per_grid():
    b2 = pattern(300, 200, seed=5)
    shared = box(300, 200, 10, 10, 60, 50)
    _, _, mask, layout = composed(shared, b=[B, b2])
    assert mask.shape[0] == 2 and torch.equal(mask[0], mask[1])
    assert (
        layout.b_regions[0] is layout.b_regions[1]
        or layout.b_regions[0].bits == layout.b_regions[1].bits
    )
    assert not np.array_equal(layout.b_regions[0].image(), layout.b_regions[1].image())
    both = torch.cat([shared, box(300, 200, 200, 120, 290, 190)])
    _, _, mask2, layout2 = composed(both, b=[B, b2])
    assert torch.equal(mask2[0], mask[0]) and not torch.equal(mask2[1], mask2[0])
    for index in range(2):
        expected = naive_latent_blocks(
            naive_b_prime_region(both[index].numpy() >= 0.5, layout2.b_placements[index], layout2)
        )
        assert np.array_equal(mask2[index].numpy() == 1.0, expected)
    # One B, one A' per grid: the region still goes to every grid.
    _, _, mask3, _ = compose(
        image(A),
        image(A_PRIME, A_PRIME[::-1].copy()),
        image(B),
        256,
        256,
        2,
        "stretch",
        ARRANGEMENTS[0],
        b_region=shared,
    )
    assert mask3.shape[0] == 2 and torch.equal(mask3[0], mask[0])


def test_layout_carries_region_and_b_compactly():
    region = box(300, 200, 5, 5, 50, 40)
    _, _, _, layout = composed(region)
    (kept,) = layout.b_regions
    assert np.array_equal(kept.mask(), region[0].numpy() >= 0.5)
    assert np.array_equal(kept.image(), B)
    assert len(kept.bits) == math.ceil(300 * 200 / 8)
    hash(layout)  # still a frozen, hashable value


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (torch.zeros(1, 200, 300), "b_region is empty"),
        (torch.full((1, 200, 300), 0.49), "b_region is empty"),
        (torch.zeros(1, 64, 64), "b_region is 64x64 px but b is 300x200 px"),
        (box(300, 200, 0, 0, 10, 10, batch=3), "b_region has 3 masks for 1 grids"),
        (torch.zeros(1, 200, 300, 3), "expected a MASK shaped"),
    ],
)
def test_bad_region_names_the_input_and_the_fix(mask, message):
    with pytest.raises(ValueError, match=message):
        composed(mask)


@pytest.mark.parametrize("mask", [torch.zeros(1, 200, 300), torch.zeros(1, 64, 64)])
def test_an_unpainted_mask_says_so_in_artist_words_first(mask):
    """Load Image without a painted mask gives a 64x64 empty mask; at B's size it is empty."""
    with pytest.raises(ValueError) as err:
        composed(mask)
    assert str(err.value).startswith(
        "No mask painted on B: right-click B's Load Image, Open in MaskEditor"
    )


def test_a_painted_mask_of_another_size_says_so_first():
    with pytest.raises(ValueError) as err:
        composed(box(120, 80, 0, 0, 10, 10))
    assert str(err.value).startswith("The region mask is not the size of B:")
    assert "b_region is 120x80 px but b is 300x200 px" in str(err.value)


def test_region_cut_away_by_fit_crop_is_an_error():
    # crop keeps the centre 200x200 of a 300x200 B: a region in the left 50 px is outside.
    with pytest.raises(ValueError, match="b_region lies outside the part of B.*fit = 'crop'"):
        composed(box(300, 200, 0, 0, 40, 200), fit="crop")
    composed(box(300, 200, 0, 0, 40, 200), fit="letterbox")  # all of B is kept: fine


def test_non_tensor_region_is_rejected_by_name():
    with pytest.raises(TypeError, match="b_region: expected a MASK tensor"):
        composed("a box")


def test_compose_declares_the_optional_region_with_a_tooltip():
    optional = grid.AnalogistGridCompose.INPUT_TYPES()["optional"]
    assert optional["b_region"][0] == "MASK" and "region" in optional["b_region"][1]["tooltip"]
    crop_optional = grid.AnalogistGridCrop.INPUT_TYPES()["optional"]
    assert crop_optional["feather"][0] == "INT" and crop_optional["feather"][1]["tooltip"]


# --- Grid Crop -----------------------------------------------------------------------------


def sampled(grids: torch.Tensor, layout: GridLayout, seed: int = 0) -> torch.Tensor:
    """A stand-in for a decoded result: the whole B' cell replaced by other pixels (so
    anything that is not composited back would show), the rest as composed."""
    out = grids.clone()
    cell = layout.cell("b_prime")
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(out.shape[0], cell.height, cell.width, 3, generator=gen)
    out[:, cell.y : cell.bottom, cell.x : cell.right] = noise
    return out


@pytest.mark.parametrize("feather", [0, 3])
@pytest.mark.parametrize("fit", FITS)
def test_crop_gives_b_back_exactly_outside_region_and_feather(fit, feather):
    region = box(300, 200, 120, 60, 181, 131)
    grids, _, _, layout = composed(region, fit=fit)
    result = sampled(grids, layout)
    out, _ = crop(result, layout, grid_math.SIZE_ORIGINAL, feather)
    kept = layout.b_placements[0].source_crop
    # Grid Crop without a region gives the part of B that was in the grid (for fit = crop
    # its centre); with one, that part goes back into the whole of B.
    plain = image(B).clone()
    plain[:, kept.y : kept.bottom, kept.x : kept.right] = grid_math.crop_b_prime(
        result, layout, grid_math.SIZE_ORIGINAL
    )
    source = region[0].numpy() >= 0.5
    original = image(B)[0]
    near = dilate(source, feather)
    outside = torch.from_numpy(~near)
    assert out.shape == plain.shape == image(B).shape
    if fit == "crop":
        assert (kept.width, kept.height) != (300, 200), "crop kept all of B: nothing tested"
    assert torch.equal(out[0][outside], original[outside])  # exactly B's own pixels
    inside = torch.from_numpy(source)
    assert torch.equal(out[0][inside], plain[0][inside])  # exactly the generated B'
    ring = torch.from_numpy(near & ~source)
    if feather:
        # In between: a blend, strictly between the two wherever they differ.
        lo, hi = torch.minimum(original, plain[0]), torch.maximum(original, plain[0])
        assert bool(((out[0] >= lo - 1e-6) & (out[0] <= hi + 1e-6)).all())
        differs = ring[..., None] & ((original - plain[0]).abs() > 0.05)
        assert bool(((out[0] - original).abs()[differs] > 0).all())
        assert bool(((out[0] - plain[0]).abs()[differs] > 0).all())
    else:
        assert not ring.any()


@pytest.mark.parametrize("output_size", [grid_math.SIZE_PLACED, grid_math.SIZE_CELL])
def test_crop_composites_in_the_other_output_sizes_too(output_size):
    region = box(300, 200, 30, 20, 90, 70)
    grids, blank, _, layout = composed(region, fit="letterbox")
    result = sampled(grids, layout)
    out, _ = crop(result, layout, output_size, 0)
    plain = grid_math.crop_b_prime(result, layout, output_size)
    placement = layout.b_placements[0]
    # B as placed, straight from the composed grid (its B cell, moved to B').
    b_cell = layout.cell("b")
    own_cell = blank[0, b_cell.y : b_cell.bottom, b_cell.x : b_cell.right]
    where = naive_b_prime_region(region[0].numpy() >= 0.5, placement, layout)
    bp = layout.cell("b_prime")
    where_cell = torch.from_numpy(where[bp.y : bp.bottom, bp.x : bp.right])
    if output_size == grid_math.SIZE_PLACED:
        content = placement.content
        x, y = content.x - b_cell.x, content.y - b_cell.y
        own = own_cell[y : y + content.height, x : x + content.width]
        where_cell = where_cell[y : y + content.height, x : x + content.width]
    else:
        # The B' cell of grid_blank is black; the original "cell" is B's own cell, white border.
        own = own_cell
    assert out.shape == plain.shape == (1, *own.shape)
    assert torch.equal(out[0][~where_cell], own[~where_cell])
    assert torch.equal(out[0][where_cell], plain[0][where_cell])


def test_several_samples_per_grid_each_get_their_own_grids_b():
    b2 = pattern(300, 200, seed=7)
    both = torch.cat([box(300, 200, 0, 0, 150, 100), box(300, 200, 150, 100, 300, 200)])
    grids, _, _, layout = composed(both, b=[B, b2])
    result = sampled(torch.cat([grids, grids]), layout, seed=3)  # k = 2 samples of 2 grids
    out, _ = crop(result, layout, grid_math.SIZE_ORIGINAL, 0)
    for index in range(4):
        source = both[index % 2].numpy() >= 0.5
        original = image([B, b2][index % 2])[0]
        outside = torch.from_numpy(~source)
        assert torch.equal(out[index][outside], original[outside])


def test_no_region_crop_ignores_feather():
    grids, _, _, layout = composed(None)
    result = sampled(grids, layout)
    out, _ = crop(result, layout, grid_math.SIZE_ORIGINAL, 7)
    assert torch.equal(out, grid_math.crop_b_prime(result, layout, grid_math.SIZE_ORIGINAL))


@pytest.mark.parametrize(
    ("feather", "error"), [(-1, ValueError), (10_000, ValueError), (1.5, TypeError)]
)
def test_bad_feather_is_a_clear_error(feather, error):
    grids, _, _, layout = composed(box(300, 200, 0, 0, 10, 10))
    with pytest.raises(error, match="feather"):
        crop(grids, layout, grid_math.SIZE_ORIGINAL, feather)


def test_feather_weights_fall_linearly_with_chessboard_distance():
    region = np.zeros((15, 15), bool)
    region[7, 7] = True
    weights = region_math.feather_weights(region, 3).numpy()
    y, x = np.mgrid[0:15, 0:15]
    distance = np.maximum(abs(y - 7), abs(x - 7))
    expected = np.where(distance <= 3, 1 - distance / 4, 0.0)
    assert np.allclose(weights, expected, atol=1e-7)


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_region_with_several_example_pairs_lands_in_the_last_rows_b_prime(arrangement):
    """Both halves of issue 12 together: with two example pairs B' is the third row's
    (column's) second cell; the region goes there, and Grid Crop still gives B back
    exactly outside region and feather."""
    (examples,) = grid.AnalogistExamplePair().add(
        image(pattern(80, 80, seed=7)), image(pattern(80, 80, seed=8))
    )
    region = box(300, 200, 120, 60, 181, 131)
    grids, blank, mask, layout = compose(
        image(A),
        image(A_PRIME),
        image(B),
        256,
        256,
        2,
        "stretch",
        arrangement,
        examples=examples,
        b_region=region,
    )
    assert layout.pairs == 2
    assert (
        mask.shape[1:]
        == grids.shape[1:3]
        == (768, 512)[:: 1 if arrangement == ARRANGEMENTS[0] else -1]
    )
    pixels_in = naive_b_prime_region(region[0].numpy() >= 0.5, layout.b_placements[0], layout)
    assert np.array_equal(mask[0].numpy() == 1.0, naive_latent_blocks(pixels_in))
    cell = layout.cell("b_prime")
    assert (cell.x, cell.y) == ((256, 512) if arrangement == ARRANGEMENTS[0] else (512, 256))
    assert mask[0, cell.y : cell.bottom, cell.x : cell.right].sum() == mask.sum() > 0
    result = sampled(grids, layout)
    out, _ = crop(result, layout, grid_math.SIZE_ORIGINAL, 2)
    outside = torch.from_numpy(~dilate(region[0].numpy() >= 0.5, 2))
    assert torch.equal(out[0][outside], image(B)[0][outside])


def test_the_layout_check_accepts_a_region_mask_inside_b_prime_and_refuses_it_elsewhere():
    """SAC/CAM's check of the sampled mask (issue 23): with a region of interest the
    inpainting mask is the region, inside the B' cell, not the whole cell."""
    from comfyui_analogist.analogist_pixels.latent_mask import mask_mismatch

    outputs = composed(box(300, 200, 40, 30, 160, 120))
    mask, layout = outputs[2], outputs[3]
    assert len(layout.b_regions) == 1
    h, w = mask.shape[-2] // 8, mask.shape[-1] // 8
    latent = F.interpolate(mask[:, None].float(), size=(h, w), mode="bilinear")[:, 0].round()
    assert float(latent.sum()) < (h // 2) * (w // 2)  # the region, not the whole B' cell
    assert mask_mismatch(layout, latent) is None
    moved = torch.roll(latent, shifts=-(w // 2), dims=-1)  # the same region in B's cell
    assert "B' cell" in (mask_mismatch(layout, moved) or "")
    assert mask_mismatch(layout, torch.zeros_like(latent)) is not None
