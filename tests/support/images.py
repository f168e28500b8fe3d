"""Real, structured test images (gradients, stripes, shapes), made on the fly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def pattern(width: int, height: int, seed: int = 0) -> Image.Image:
    """An RGB image with a gradient, stripes and a disc: every pixel region differs."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, size=3)
    red = (xs * 255 // max(width - 1, 1) + base[0]) % 256
    green = (ys * 255 // max(height - 1, 1) + base[1]) % 256
    blue = (((xs // 8 + ys // 8) % 2) * 160 + base[2]) % 256
    image = Image.fromarray(np.stack([red, green, blue], axis=-1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    r = min(width, height) // 4
    cx, cy = (
        int(rng.integers(r, max(width - r, r + 1))),
        int(rng.integers(r, max(height - r, r + 1))),
    )
    draw.ellipse(
        [cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3))
    )
    return image


def save_pattern(path: Path, width: int, height: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pattern(width, height, seed).save(path)
    return path
