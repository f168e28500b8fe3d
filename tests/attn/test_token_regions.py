"""Where the grid's regions land on a block's token map, and when they cannot."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from comfyui_analogist.analogist_attn.geometry import (
    REGION_LABELS,
    REGIONS,
    CellGeometry,
    Rect,
    region_tokens,
    regions_for_block,
    token_map_size,
)
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    make_layout,
)


def _indices(rows: range, cols: range, w: int) -> list[int]:
    return [y * w + x for y in rows for x in cols]


def test_default_arrangement_lists_each_quadrant_row_major() -> None:
    h, w = 4, 8
    regions = region_tokens(make_layout().geometry, h, w)
    assert regions.a.tolist() == _indices(range(0, 2), range(0, 4), w)
    assert regions.a_prime.tolist() == _indices(range(0, 2), range(4, 8), w)
    assert regions.b.tolist() == _indices(range(2, 4), range(0, 4), w)
    assert regions.b_prime.tolist() == _indices(range(2, 4), range(4, 8), w)
    assert regions.region_size == 8 and regions.n_tokens == 32
    assert regions.a.dtype == torch.long


def test_aligned_arrangement_swaps_a_prime_and_b() -> None:
    h, w = 6, 6
    regions = region_tokens(make_layout(arrangement=ARRANGEMENT_ALIGNED).geometry, h, w)
    assert regions.a_prime.tolist() == _indices(range(3, 6), range(0, 3), w)
    assert regions.b.tolist() == _indices(range(0, 3), range(3, 6), w)
    assert regions.b_prime.tolist() == _indices(range(3, 6), range(3, 6), w)


def test_same_local_position_means_same_offset_in_every_region() -> None:
    h, w = 12, 16  # non-square map of a non-square grid
    regions = region_tokens(make_layout(256, 192).geometry, h, w)
    ay, ax = regions.a // w, regions.a % w
    for name in ("a_prime", "b", "b_prime"):
        idx = regions.region(name)
        oy, ox = idx // w, idx % w
        assert torch.equal(oy - ay, (oy - ay)[:1].expand_as(oy))
        assert torch.equal(ox - ax, (ox - ax)[:1].expand_as(ox))


def test_rows_sac_and_cam_leave_alone_are_the_complements() -> None:
    regions = region_tokens(make_layout().geometry, 4, 4)
    edited = set(regions.a_prime.tolist()) | set(regions.b_prime.tolist())
    assert set(regions.sac_untouched.tolist()) == set(range(16)) - edited
    assert regions.cam_rows.tolist() == regions.b_prime.tolist()
    assert regions.cam_keep.nonzero().flatten().tolist() == regions.b_prime.tolist()


def test_indices_are_cached_per_layout_map_and_device() -> None:
    cells = make_layout(320, 320).geometry
    first = region_tokens(cells, 10, 10)
    assert region_tokens(dataclasses.replace(cells), 10, 10, "cpu") is first  # equal, not same
    assert region_tokens(cells, 20, 20) is not first


def test_edge_inside_a_token_names_the_edge_the_map_and_the_fix() -> None:
    with pytest.raises(
        ValueError,
        match=r"bottom edge of the A cell \(256 px of a 512 x 512 px grid\).*13 x 16 \(h x w\) "
        r"token map.*multiples of 64 px",
    ):
        region_tokens(make_layout().geometry, 13, 16)


def test_unequal_regions_are_refused() -> None:
    rects = (
        Rect(0, 0, 256, 256),
        Rect(256, 0, 256, 256),
        Rect(0, 256, 128, 256),
        Rect(256, 256, 256, 256),
    )
    cells = CellGeometry(512, 512, REGIONS, tuple(REGION_LABELS[n] for n in REGIONS), rects)
    with pytest.raises(ValueError, match="equal shapes"):
        region_tokens(cells, 8, 8)


@pytest.mark.parametrize(
    ("latent_hw", "factor"),
    [((64, 64), 1), ((64, 64), 8), ((65, 33), 2), ((65, 33), 4), ((9, 13), 8), ((128, 96), 4)],
)
def test_token_map_is_inferred_from_latent_shape_and_token_count(
    latent_hw: tuple[int, int], factor: int
) -> None:
    height, width = latent_hw
    h, w = -(-height // factor), -(-width // factor)
    assert token_map_size([2, 4, height, width], h * w) == (h, w)


def test_token_count_matching_no_level_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"1000 attention tokens to the 64 x 64 latent"):
        token_map_size([1, 4, 64, 64], 1000)


def test_block_regions_come_from_latent_shape() -> None:
    cells = make_layout(256, 384).geometry  # grid 512 x 768 px: latent 96 x 64
    regions = regions_for_block(cells, [2, 4, 96, 64], 24 * 16)
    assert (regions.h, regions.w) == (24, 16)
    assert regions.b_prime[0].item() == 12 * 16 + 8


def test_cells_off_the_64px_grid_are_refused_with_sizes_that_work() -> None:
    cells = make_layout(264, 264).geometry  # latent 66 x 66: 33 tokens at f=2
    with pytest.raises(ValueError, match=r"x = 264 px.*16 px per token.*256 x 256 or 320 x 320"):
        regions_for_block(cells, [1, 4, 66, 66], 33 * 33)


def test_map_that_only_looks_aligned_after_rounding_up_is_refused() -> None:
    # 48 px cells: a 12 x 12 latent becomes a 2 x 2 map at the deepest level, one token
    # per region in token units, yet each token straddles two cells of the real image.
    cells = make_layout(48, 48).geometry
    assert region_tokens(cells, 2, 2).region_size == 1
    with pytest.raises(ValueError, match="64 px per token"):
        regions_for_block(cells, [1, 4, 12, 12], 2 * 2)


def test_both_arrangements_give_disjoint_regions_covering_the_map() -> None:
    for arrangement in (ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED):
        regions = region_tokens(make_layout(arrangement=arrangement).geometry, 6, 10)
        every = torch.cat([regions.a, regions.a_prime, regions.b, regions.b_prime])
        assert sorted(every.tolist()) == list(range(60))
