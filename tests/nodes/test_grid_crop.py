"""AnalogistGridCrop: B' out of the sampled grid, back at B's size."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_attn.geometry import Rect
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENTS, FITS, make_layout
from comfyui_analogist.nodes import grid
from support.grid_images import image, pattern

compose = grid.AnalogistGridCompose().compose
crop = grid.AnalogistGridCrop().crop

A = pattern(120, 100, seed=0)
A_PRIME = pattern(90, 130, seed=1)


def _grid_of(
    b: np.ndarray, fit: str = "stretch", arrangement: str = ARRANGEMENTS[0], cell: int = 256
):
    """The sampler's starting grid: for these tests it stands in for a decoded result,
    since B' then holds a copy of B and the crop must give B back."""
    grid_out, _, _, layout = compose(
        image(A), image(A_PRIME), image(b), cell, cell, 2, fit, arrangement
    )
    return grid_out, layout


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("fit", FITS)
@pytest.mark.parametrize(("width", "height"), [(300, 200), (180, 400)])
def test_round_trip_gives_b_back_at_its_original_size(
    fit: str, arrangement: str, width: int, height: int
) -> None:
    b = pattern(width, height, seed=2, square=24)
    grids, layout = _grid_of(b, fit, arrangement)
    b_prime, _ = crop(grids, layout)
    kept = layout.b_placements[0].source_crop
    # crop keeps the centre of B (the rest was never in the grid); the others all of B.
    if fit == "crop":
        assert kept.width < width or kept.height < height
    else:
        assert kept == Rect(0, 0, width, height)
    expected = image(b)[:, kept.y : kept.bottom, kept.x : kept.right]
    assert b_prime.shape == expected.shape
    # Two bicubic resamplings (253 px and back); a 1 px misplacement doubles this error.
    assert (b_prime - expected).abs().mean() < 0.0075


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("fit", FITS)
def test_as_placed_cuts_exactly_the_content_rect_of_b_prime(fit: str, arrangement: str) -> None:
    grids, layout = _grid_of(pattern(300, 200, seed=2), fit, arrangement)
    placed, _ = crop(grids, layout, "as placed in the grid")
    content = layout.b_placements[0].content
    # The quadrant copy puts B's pixels in B' at the same place within the cell.
    assert torch.equal(placed[0], grids[0, content.y : content.bottom, content.x : content.right])


def test_whole_cell_is_the_b_prime_quadrant() -> None:
    grids, layout = _grid_of(pattern(300, 200, seed=2), "letterbox", cell=320)
    cell_out, _ = crop(grids, layout, "whole cell")
    assert torch.equal(cell_out[0], grids[0, 320:, 320:])


def test_strip_lays_the_four_cells_side_by_side() -> None:
    grids, layout = _grid_of(pattern(300, 200, seed=2), arrangement=ARRANGEMENTS[1])
    _, strip = crop(torch.cat([grids, grids.flip(1)]), layout)
    assert strip.shape == (2, 256, 1024, 3)
    for index, region in enumerate(("a", "a_prime", "b", "b_prime")):
        cell = layout.cell(region)
        expected = grids[0, cell.y : cell.bottom, cell.x : cell.right]
        assert torch.equal(strip[0, :, index * 256 : (index + 1) * 256], expected)


def test_several_samples_per_grid_map_to_grid_i_mod_n() -> None:
    bs = [pattern(300, 200, seed=2), pattern(300, 200, seed=5)]
    grids, _, _, layout = compose(image(A), image(A_PRIME), image(*bs), 256, 256, 2, "letterbox")
    repeated = torch.cat([grids, grids, grids])  # RepeatLatentBatch order
    out, strip = crop(repeated, layout)
    assert out.shape == (6, 200, 300, 3) and strip.shape[0] == 6
    for index in range(6):
        assert torch.equal(out[index], out[index % 2])
    assert not torch.equal(out[0], out[1])


def test_one_grid_layout_accepts_any_batch() -> None:
    grids, layout = _grid_of(pattern(300, 200, seed=2))
    out, _ = crop(grids.repeat(5, 1, 1, 1), layout)
    assert out.shape == (5, 200, 300, 3)


def test_batch_that_is_not_a_multiple_of_the_grids_is_an_error() -> None:
    grids, _, _, layout = compose(
        image(A), image(A_PRIME), image(pattern(64, 64), pattern(64, 64, 3))
    )
    with pytest.raises(ValueError, match="grid has 3 images but the layout was made for 2 grids"):
        crop(torch.cat([grids, grids[:1]]), layout)


def test_grid_of_another_size_is_an_error_naming_both_sizes() -> None:
    grids, layout = _grid_of(pattern(300, 200))
    bigger = torch.nn.functional.pad(grids, (0, 0, 0, 64, 0, 64))
    with pytest.raises(
        ValueError, match="grid is 576x576 px but the layout describes a 512x512 px grid"
    ):
        crop(bigger, layout)


def test_b_of_different_sizes_are_resized_to_the_first_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    grids, layout = _grid_of(pattern(300, 200))
    other = dataclasses.replace(
        layout.b_placements[0],
        source_width=150,
        source_height=100,
        source_crop=Rect(0, 0, 150, 100),
    )
    mixed = dataclasses.replace(layout, b_placements=(layout.b_placements[0], other))
    with caplog.at_level(logging.WARNING, logger="analogist"):
        out, _ = crop(grids.repeat(2, 1, 1, 1), mixed)
    assert out.shape == (2, 200, 300, 3)
    assert "different sizes" in caplog.text


def test_layout_without_placements_crops_the_paste_size() -> None:
    layout = make_layout(256, 256)
    out, _ = crop(image(pattern(512, 512)), layout)
    assert out.shape == (1, 253, 253, 3)


def test_decoded_rgba_or_gray_grids_are_read_as_rgb() -> None:
    grids, layout = _grid_of(pattern(300, 200))
    rgba = torch.cat([grids, torch.ones_like(grids[..., :1])], dim=-1)
    assert torch.equal(crop(rgba, layout)[0], crop(grids, layout)[0])
    assert crop(grids[..., :1], layout)[0].shape == (1, 200, 300, 3)


def test_bad_output_size_and_bad_layout_are_errors() -> None:
    grids, layout = _grid_of(pattern(300, 200))
    with pytest.raises(ValueError, match="output_size = 'huge' is not one of"):
        crop(grids, layout, "huge")
    with pytest.raises(TypeError, match="layout: expected the ANALOGIST_LAYOUT output"):
        crop(grids, {"cells": []})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grid is empty"):
        crop(grids[:0], layout)
