"""The grid nodes under bad input (issue 16): 0..255 floats, NaN/inf, a layout from another
Grid Compose, layouts and colours of the wrong type get clear errors, never a silent wrong
image."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from comfyui_analogist.analogist_pixels.layout import make_layout
from comfyui_analogist.nodes import grid
from support.grid_images import image, pattern

compose = grid.AnalogistGridCompose().compose
crop = grid.AnalogistGridCrop().crop
mark = grid.AnalogistMarkAndArrow().mark

A = image(pattern(48, 40, seed=0))
A_PRIME = image(pattern(40, 48, seed=1))


def vae_like(grids: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """What a VAE round trip does to the cells that are not inpainted, roughly: detail
    below 8 px smeared, a few levels of noise."""
    nchw = grids.permute(0, 3, 1, 2)
    smooth = F.interpolate(
        F.avg_pool2d(nchw, 4), scale_factor=4, mode="bilinear", align_corners=False
    )
    noise = torch.randn(smooth.shape, generator=torch.Generator().manual_seed(seed)) * 0.02
    return (smooth + noise).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def test_float_images_in_0_255_are_refused_not_turned_white():
    b255 = image(pattern(32, 32, seed=2)) * 255.0
    with pytest.raises(
        ValueError, match=r"b has pixel values up to 2\d\d.*0\.\.255 image.*divide it by 255"
    ):
        compose(A, A_PRIME, b255, 64, 64)
    grids, _, _, layout = compose(A, A_PRIME, image(pattern(32, 32, seed=2)), 64, 64)
    with pytest.raises(ValueError, match="grid has pixel values up to"):
        crop(grids * 255.0, layout)
    assert compose(A, A_PRIME, image(pattern(32, 32, seed=2)) * 1.02, 64, 64)  # overshoot: clamped


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_pixels_are_refused_everywhere(bad):
    b = image(pattern(32, 32, seed=2))
    poisoned = b.clone()
    poisoned[0, 3, 4, 1] = bad
    with pytest.raises(ValueError, match=r"b has 1 of \d+ values that are NaN or infinite"):
        compose(A, A_PRIME, poisoned, 64, 64)
    grids, blank, _, layout = compose(A, A_PRIME, b, 64, 64)
    with pytest.raises(ValueError, match="grid has .* NaN or infinite"):
        crop(torch.full_like(grids, bad), layout)  # the all-NaN grid that gave a black B'
    with pytest.raises(ValueError, match="grid has .* NaN or infinite"):
        mark(torch.full_like(blank, bad), layout)


def test_integer_images_are_refused():
    with pytest.raises(TypeError, match="a: expected float pixels in 0..1"):
        compose((A * 255).to(torch.uint8), A_PRIME, A, 64, 64)


def test_a_layout_from_another_grid_compose_is_named_not_used():
    """The issue's case: two Grid Composes with grids of the same size; Grid Crop got the
    other one's layout and returned a 32x16 B' for a 32x32 B."""
    square = image(pattern(32, 32, seed=2))
    wide = image(pattern(32, 16, seed=3))
    grids_square, _, _, layout_square = compose(A, A_PRIME, square, 64, 64)
    grids_wide, _, _, layout_wide = compose(A, A_PRIME, wide, 64, 64)
    assert crop(vae_like(grids_square), layout_square)[0].shape == (1, 32, 32, 3)
    with pytest.raises(
        ValueError, match=r"made by another Analogist Grid Compose \(B of 32x32.*\(B of 32x16"
    ):
        crop(vae_like(grids_square), layout_wide)
    with pytest.raises(ValueError, match="made by another Analogist Grid Compose"):
        mark(grids_wide, layout_square)


def test_a_vae_round_trip_still_matches_its_own_layout_silently(caplog):
    grids, _, _, layout = compose(
        A, A_PRIME, image(pattern(40, 24, seed=4)), 64, 64, 2, "letterbox"
    )
    with caplog.at_level(logging.WARNING, logger="analogist"):
        b_prime, _ = crop(
            vae_like(torch.cat([grids, grids]), seed=5), layout
        )  # 2 samples of 1 grid
    assert b_prime.shape == (2, 24, 40, 3)
    assert not caplog.records
    assert len(layout.fingerprints) == 1 and len(layout.fingerprints[0]) == 3 * 8 * 8 * 3


def test_a_grid_that_matches_no_known_layout_gets_a_warning_not_silence(caplog):
    """A sampler that regenerated the whole grid (or a random-weight VAE): nothing tells
    which layout it belongs to, and the node says it cannot confirm it."""
    grids, _, _, layout = compose(A, A_PRIME, image(pattern(32, 32, seed=2)), 64, 64)
    noise = torch.rand(grids.shape, generator=torch.Generator().manual_seed(9))
    with caplog.at_level(logging.WARNING, logger="analogist"):
        b_prime, _ = crop(noise, layout)
    assert b_prime.shape == (1, 32, 32, 3)
    assert "cannot confirm that the connected layout belongs to this grid" in caplog.text


def test_a_layout_made_without_grid_compose_is_not_checked(caplog):
    layout = make_layout(64, 64)  # no fingerprints: nothing to compare
    with caplog.at_level(logging.WARNING, logger="analogist"):
        crop(torch.rand(1, 128, 128, 3), layout)
    assert "cannot confirm" not in caplog.text


@pytest.mark.parametrize("bad", [None, {"cell_width": 64}, "layout", 3])
def test_a_layout_of_the_wrong_type_gets_a_clear_error(bad):
    grids, blank, _, _ = compose(A, A_PRIME, image(pattern(32, 32, seed=2)), 64, 64)
    for call in (lambda: crop(grids, bad), lambda: mark(blank, bad)):
        with pytest.raises(
            TypeError,
            match="layout: expected the ANALOGIST_LAYOUT output of Analogist Grid Compose",
        ):
            call()
    from comfyui_analogist.analogist_pixels import grid as grid_math

    with pytest.raises(TypeError, match="layout: expected"):
        grid_math.crop_b_prime(grids, bad)


@pytest.mark.parametrize("bad", [None, {"r": 1}, 0xE60000, (230, 0, 0)])
def test_a_colour_of_the_wrong_type_gets_a_clear_error(bad):
    _, blank, _, layout = compose(A, A_PRIME, image(pattern(32, 32, seed=2)), 64, 64)
    with pytest.raises(TypeError, match=r"arrow_color must be a colour as text \(#RRGGBB"):
        mark(blank, layout, arrow_color=bad)
    assert np.isfinite(mark(blank, layout)[0].numpy()).all()


@pytest.mark.parametrize("bad", [None, {"cell_width": 64}])
def test_the_attention_patches_refuse_a_layout_of_the_wrong_type(bad):
    from comfyui_analogist.nodes.attention import AnalogistCAMPatch, AnalogistSACPatch
    from comfyui_analogist.nodes.patching import PASSES

    with pytest.raises(TypeError, match="layout: expected the ANALOGIST_LAYOUT output"):
        AnalogistSACPatch().patch(None, bad, 1.3, 3, 11, 0.0, 1.0, PASSES[0])
    with pytest.raises(TypeError, match="layout: expected the ANALOGIST_LAYOUT output"):
        AnalogistCAMPatch().patch(None, bad, 3, 11, 0.0, 1.0, PASSES[0])
