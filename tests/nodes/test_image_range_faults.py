"""Issue 23: images outside 0..1 and broken candidates never reach a result silently.

Grid Compose / Grid Crop refuse a -1..1 image (the mirror of the 0..255 case, which used to
be clamped: half of B went black). Rank Candidates uses the same image check (an all-NaN,
a 0..255 or a -1..1 candidate used to be ranked, the broken one often first) and refuses
an A' that encodes like A instead of scoring every candidate 0.0000. The scores come from
a real (random-weight) ComfyUI CLIP vision model.
"""

from __future__ import annotations

import re

import pytest
import torch
from comfyui_analogist.analogist_metrics.direction import RankingError
from comfyui_analogist.nodes import grid, rank
from support.clip_vision import tiny_clip_vision
from support.grid_images import image, pattern

compose = grid.AnalogistGridCompose().compose
crop = grid.AnalogistGridCrop().crop
ranker = rank.AnalogistRankCandidates()

A = image(pattern(48, 40, seed=0))
A_PRIME = image(pattern(40, 48, seed=1))
B = image(pattern(32, 32, seed=2))


def signed(images: torch.Tensor) -> torch.Tensor:
    """The same picture in -1..1, as raw model outputs are."""
    return images * 2.0 - 1.0


@pytest.fixture(scope="module")
def clip_vision(tmp_path_factory):
    return tiny_clip_vision(tmp_path_factory.mktemp("clip-vision"), seed=0)


def candidates(*seeds: int) -> torch.Tensor:
    return image(*(pattern(32, 32, seed=s, square=4 + 3 * s) for s in seeds))


def test_grid_compose_refuses_a_minus_one_to_one_image_instead_of_blackening_it():
    with pytest.raises(
        ValueError, match=r"b has pixel values down to -1\b.*-1\.\.1 image.*\(x \+ 1\) / 2"
    ):
        compose(A, A_PRIME, signed(B), 64, 64)
    with pytest.raises(ValueError, match=r"a_prime has pixel values down to"):
        compose(A, signed(A_PRIME), B, 64, 64)
    # Slight undershoot (a sharpening resize) is still accepted and clamped.
    assert compose(A, A_PRIME, B - 0.02, 64, 64)


def test_grid_crop_refuses_a_minus_one_to_one_grid():
    grids, _, _, layout = compose(A, A_PRIME, B, 64, 64)
    with pytest.raises(ValueError, match=r"grid has pixel values down to -1\b"):
        crop(signed(grids), layout)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda c: torch.full_like(c, float("nan")), r"b_prime has \d+ of \d+ values that are NaN"),
        (lambda c: torch.full_like(c, float("inf")), r"b_prime has \d+ of \d+ values that are NaN"),
        (lambda c: c * 255.0, r"b_prime has pixel values up to .*0\.\.255 image"),
        (signed, r"b_prime has pixel values down to .*-1\.\.1 image"),
    ],
    ids=["all-nan", "inf", "0..255", "-1..1"],
)
def test_a_broken_candidate_is_refused_not_ranked(clip_vision, spoil, message):
    batch = candidates(4, 5, 6)
    batch[1] = spoil(batch[1])
    with pytest.raises(RankingError, match=message):
        ranker.rank(clip_vision, A, A_PRIME, B, batch)


@pytest.mark.parametrize("which", ["a", "a_prime", "b"])
def test_a_broken_example_or_b_is_refused_with_its_name(clip_vision, which):
    inputs = {"a": A, "a_prime": A_PRIME, "b": B}
    inputs[which] = inputs[which] * 255.0
    with pytest.raises(RankingError, match=rf"^{which} has pixel values up to"):
        ranker.rank(clip_vision, inputs["a"], inputs["a_prime"], inputs["b"], candidates(4, 5))


def test_a_prime_equal_to_a_is_an_error_not_all_zero_scores(clip_vision):
    with pytest.raises(
        RankingError, match=r"a_prime: A' looks the same as A .*every score would be 0"
    ):
        ranker.rank(clip_vision, A, A.clone(), B, candidates(4, 5, 6))
    # Per B: with one A' per B, the message says which B has no direction.
    with pytest.raises(RankingError, match=re.escape("(for B number 2)")):
        ranker.rank(
            clip_vision,
            torch.cat([A, A]),
            torch.cat([torch.flip(A, [2]), A]),
            torch.cat([B, B]),
            candidates(4, 5),
        )


def test_a_candidate_identical_to_b_is_marked_in_the_scores(clip_vision):
    batch = torch.cat([candidates(4), B, candidates(6)])
    out = ranker.rank(clip_vision, A, A_PRIME, B, batch)
    (line,) = out["ui"]["text"]
    assert re.search(r"#1 0\.0000 \(same as B\)", line), line
    assert line.count("(same as B)") == 1
