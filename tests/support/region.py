"""Naive oracles for the region of interest on B, written from the definitions in
``analogist_attn/region.py`` with exact fractions and loops (tests only)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def naive_b_prime_region(mask: np.ndarray, placement, layout) -> np.ndarray:
    """``[grid_h, grid_w]`` booleans: the B' pixels whose source footprint (the part of B
    they were resampled from, through B's placement) touches a region pixel of ``mask``."""
    crop, content = placement.source_crop, placement.content
    out = np.zeros((layout.grid_height, layout.grid_width), bool)
    offset_x = layout.cell("b_prime").x - layout.cell("b").x
    offset_y = layout.cell("b_prime").y - layout.cell("b").y
    for y in range(content.height):
        top = Fraction(y * crop.height, content.height)
        bottom = Fraction((y + 1) * crop.height, content.height)
        rows = mask[crop.y + math.floor(top) : crop.y + math.ceil(bottom), crop.x : crop.right]
        row_any = rows.any(axis=0)
        for x in range(content.width):
            left = Fraction(x * crop.width, content.width)
            right = Fraction((x + 1) * crop.width, content.width)
            hit = row_any[math.floor(left) : math.ceil(right)].any()
            out[content.y + offset_y + y, content.x + offset_x + x] = hit
    return out


def naive_latent_blocks(pixels: np.ndarray) -> np.ndarray:
    """Grow a pixel mask to whole 8x8 blocks, block by block."""
    out = np.zeros_like(pixels)
    for by in range(0, pixels.shape[0], 8):
        for bx in range(0, pixels.shape[1], 8):
            if pixels[by : by + 8, bx : bx + 8].any():
                out[by : by + 8, bx : bx + 8] = True
    return out


def naive_tokens_inside(pixels: np.ndarray, h: int, w: int) -> np.ndarray:
    """``[h * w]`` booleans: a token of the ``h x w`` map is inside when any grid pixel it
    covers is in ``pixels`` (the map covers the grid evenly: cells are multiples of 64 px)."""
    grid_h, grid_w = pixels.shape
    out = np.zeros(h * w, bool)
    for ty in range(h):
        for tx in range(w):
            block = pixels[
                ty * grid_h // h : (ty + 1) * grid_h // h, tx * grid_w // w : (tx + 1) * grid_w // w
            ]
            out[ty * w + tx] = bool(block.any())
    return out
