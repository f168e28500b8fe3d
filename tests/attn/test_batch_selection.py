"""Turning ComfyUI's cond/uncond batch layout into the edits' batch selection."""

from __future__ import annotations

import pytest
from comfyui_analogist.analogist_attn.sdpa import batch_mask_from_cond_or_uncond


def test_cond_only_selects_the_cond_chunk() -> None:
    mask = batch_mask_from_cond_or_uncond([1, 0], 4, on_cond=True, on_uncond=False)
    assert mask is not None and mask.tolist() == [False, False, True, True]


def test_uncond_only_selects_the_uncond_chunk() -> None:
    mask = batch_mask_from_cond_or_uncond([0, 1], 2, on_cond=False, on_uncond=True)
    assert mask is not None and mask.tolist() == [False, True]


def test_selecting_everything_returns_none_for_the_fast_path() -> None:
    assert batch_mask_from_cond_or_uncond([1, 0], 2) is None
    assert batch_mask_from_cond_or_uncond([0], 3, on_uncond=False) is None


def test_batch_that_does_not_split_into_chunks_is_an_error() -> None:
    with pytest.raises(ValueError, match="batch of 3"):
        batch_mask_from_cond_or_uncond([1, 0], 3, on_cond=False)
