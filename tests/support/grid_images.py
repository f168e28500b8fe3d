"""Structured test images for the grid node tests: gradients, checkerboards and a
distinct tint per input, so a misplaced, flipped or swapped cell is visible in the pixels
(a constant image would hide all three)."""

from __future__ import annotations

import numpy as np
import torch


def pattern(width: int, height: int, seed: int = 0, square: int = 16) -> np.ndarray:
    """``[height, width, 3]`` uint8: red rises left to right, green top to bottom, blue is a
    checkerboard whose phase and levels depend on ``seed``."""
    y, x = np.mgrid[0:height, 0:width]
    red = x * 255 // max(width - 1, 1)
    green = y * 255 // max(height - 1, 1)
    # The seed shifts both the checkerboard's phase and its blue levels.
    checker = ((x + 5 * seed) // square + y // square) % 2
    blue = (37 * seed) % 150 + checker * 100
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def image(*arrays: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, C]`` arrays -> a ComfyUI IMAGE batch, exactly ``k / 255``."""
    return torch.from_numpy(np.stack(arrays)).float().div(255.0)


def pixels(images: torch.Tensor) -> np.ndarray:
    """A float IMAGE back to uint8, rounding (the node's own conversion)."""
    return images.mul(255.0).round().clamp(0, 255).to(torch.uint8).numpy()
