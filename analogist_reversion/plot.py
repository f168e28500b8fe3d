"""The loss curve as an image (ComfyUI IMAGE layout), drawn with PIL."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw


def loss_curve_image(losses: list[float], width: int = 512, height: int = 256) -> torch.Tensor:
    """Mean training loss per optimizer step as a line plot, ``[1, H, W, 3]`` float 0..1."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 48, width - 12, 20, height - 24
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    values = [v for v in losses if math.isfinite(v)]
    if values:
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        n = len(losses)
        points = []
        for i, v in enumerate(losses):
            if not math.isfinite(v):
                continue
            x = left + (right - left) * (i / max(n - 1, 1))
            y = bottom - (bottom - top) * ((v - lo) / span)
            points.append((x, y))
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(200, 40, 40))
        else:
            draw.line(points, fill=(200, 40, 40), width=2)
        draw.text((left, 4), f"ReVersion loss, {n} steps", fill=(0, 0, 0))
        draw.text((2, top), f"{hi:.4g}", fill=(0, 0, 0))
        draw.text((2, bottom - 10), f"{lo:.4g}", fill=(0, 0, 0))
        draw.text((right - 60, bottom + 6), f"step {n}", fill=(0, 0, 0))
    else:
        draw.text((left + 8, top + 8), "no steps trained", fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
