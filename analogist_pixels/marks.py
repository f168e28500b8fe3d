"""Label squares and arrows on the grid, so a vision-language model reads the analogy.

The paper (``visual_prompting.py`` of the original code) draws a black square with a
white "A", "A'", "B", "B'" at the top-left corner of each pasted image and two red arrows
(cv2.arrowedLine, tip length 0.35) from A to A' and from B to B'. This module redraws
them with PIL and numpy only:

* Text uses the FreeType font that Pillow ships (Aileron Regular, from
  ``ImageFont.load_default(size=...)``, Pillow >= 10.1; Aileron is CC0 1.0, public
  domain, so nothing is vendored and no NOTICE is needed), never a system font, so every
  machine draws the same letters (up to FreeType's own rasteriser version). The paper
  used Arial Bold, which cannot be shipped; a thin outline in the text colour makes
  Aileron read as bold.
* Arrows are thick segments with round ends (every pixel centre within width/2 of the
  segment), which is what cv2 draws for a thickness above 1, so no OpenCV is needed.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..analogist_attn.geometry import REGION_LABELS
from .grid import check_grid_size, check_image, check_layout_belongs, to_float, to_rgb, to_uint8
from .layout import GridLayout, check_layout

# The paper's values, all at cell 256 and scaled with the cell.
LABEL_SIDE_AT_256 = 36
LABEL_BACKGROUND = (0, 0, 0)
LABEL_TEXT = (255, 255, 255)
ARROW_COLOR = (230, 0, 0)
ARROW_HALF_LENGTH = 1 / 10  # of the cell: from c - c/10 to c + c/10
ARROW_WIDTH = 1 / 64  # of the cell
ARROW_TIP = 0.35  # head stroke length as a fraction of the arrow (cv2's tipLength)

Color = tuple[int, int, int]
Point = tuple[float, float]


def default_label_side(layout: GridLayout) -> int:
    """36 px at cell 256, scaled with the (smaller) cell side."""
    cell = min(layout.cell_width, layout.cell_height)
    return max(1, round(LABEL_SIDE_AT_256 * cell / 256))


def default_arrow_width(layout: GridLayout) -> int:
    """cell / 64 px (4 at cell 256), at least 1."""
    return max(1, int(min(layout.cell_width, layout.cell_height) * ARROW_WIDTH))


def parse_color(text: str, name: str) -> Color:
    """``#RRGGBB``, ``RRGGBB`` or ``R, G, B`` (0-255) -> an RGB tuple; errors name the input."""
    if not isinstance(text, str):
        raise TypeError(
            f"{name} must be a colour as text (#RRGGBB, e.g. #E60000, or R, G, B with numbers "
            f"0-255), got {type(text).__name__} {text!r:.60}."
        )
    value = text.strip()
    hex_match = re.fullmatch(r"#?([0-9a-fA-F]{6})", value)
    if hex_match:
        digits = hex_match.group(1)
        return tuple(int(digits[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
    parts = [part.strip() for part in value.split(",")]
    if len(parts) == 3 and all(part.isdigit() and int(part) <= 255 for part in parts):
        return tuple(int(part) for part in parts)  # type: ignore[return-value]
    raise ValueError(
        f"{name} = {text!r} is not a colour: write it as #RRGGBB (e.g. #E60000) or as "
        "R, G, B with numbers 0-255 (e.g. 230, 0, 0)."
    )


# --- labels ------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def label_font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled FreeType font at ``size`` px; a clear error when Pillow lacks it."""
    try:
        font = ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError) as exc:  # Pillow < 10.1, or no FreeType
        raise RuntimeError(_NO_FREETYPE) from exc
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise RuntimeError(_NO_FREETYPE)
    return font


_NO_FREETYPE = (
    "MarkAndArrow needs Pillow >= 10.1 built with FreeType to draw the labels (it uses "
    "the font bundled with Pillow, not a system font). Update Pillow "
    "(pip install -U pillow), or switch the labels off with draw_labels = false."
)


@lru_cache(maxsize=32)
def label_style(
    side: int, labels: tuple[str, ...] = tuple(REGION_LABELS.values())
) -> tuple[int, int]:
    """``(font size, outline width)`` of the largest text for which every label fits in a
    ``side`` px square with a small margin: one size for all of them, so they look alike
    (the paper's four; A1, A1', ... B, B' with several example pairs)."""
    margin = max(1, side // 12)
    room = side - 2 * margin
    for size in range(side, 0, -1):
        outline = size // 30
        font = label_font(size)
        boxes = [font.getbbox(text, stroke_width=outline) for text in labels]
        if all(r - left <= room and b - t <= room for left, t, r, b in boxes):
            return size, outline
    return 1, 0


def draw_labels(
    image: Image.Image, layout: GridLayout, side: int, background: Color, text: Color
) -> None:
    """A ``side`` px square at the top-left of each pasted image, its name centred in it.

    The corner is the paste rectangle's, as in the paper: ``(p, p)``, ``(c + p - 1, p)``...
    The square is exactly ``side`` px, as docs/design.md ("The grid") says; the original code's
    inclusive ``rectangle([x, y, x + side, y + side])`` happened to cover ``side + 1``.
    """
    names = layout.region_names
    size, outline = label_style(side, tuple(layout.label(name) for name in names))
    font = label_font(size)
    draw = ImageDraw.Draw(image)
    for region in names:
        corner = layout.paste(region)
        draw.rectangle(
            (corner.x, corner.y, corner.x + side - 1, corner.y + side - 1), fill=background
        )
        label = layout.label(region)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font, stroke_width=outline)
        # Centre the ink, not the font's em box, so "A" and "B'" sit in the middle alike.
        x = corner.x + (side - (right - left)) // 2 - left
        y = corner.y + (side - (bottom - top)) // 2 - top
        draw.text((x, y), label, font=font, fill=text, stroke_width=outline, stroke_fill=text)


# --- arrows ------------------------------------------------------------------------------


def arrow_ends(layout: GridLayout, source: str, target: str) -> tuple[Point, Point]:
    """Arrow from one cell to the next, across the middle of the edge they share.

    In the paper's arrangement A' is right of A (and B' right of B): the arrows point right
    at ``y = c/2`` and ``c/2 + c``, from ``x = c - c/10`` to ``c + c/10`` (``int(c/10)``, as
    the original code rounds). With "A aligned with B", A' sits below A, so the arrows point
    down across the middle of each column instead: the analogy still reads A -> A', B -> B'.
    """
    start, end = layout.cell(source), layout.cell(target)
    if end.x > start.x:
        half = int(start.width * ARROW_HALF_LENGTH)
        y = start.y + start.height // 2
        return (end.x - half, y), (end.x + half, y)
    half = int(start.height * ARROW_HALF_LENGTH)
    x = start.x + start.width // 2
    return (x, end.y - half), (x, end.y + half)


def arrow_strokes(start: Point, end: Point) -> list[tuple[Point, Point]]:
    """Shaft plus the two head strokes at +-45 degrees, as cv2.arrowedLine builds them."""
    tip = ARROW_TIP * math.dist(start, end)
    angle = math.atan2(start[1] - end[1], start[0] - end[0])
    heads = [
        (round(end[0] + tip * math.cos(angle + turn)), round(end[1] + tip * math.sin(angle + turn)))
        for turn in (math.pi / 4, -math.pi / 4)
    ]
    return [(start, end)] + [(head, end) for head in heads]


def paint_stroke(canvas: np.ndarray, start: Point, end: Point, width: int, color: Color) -> None:
    """Paint every pixel whose centre lies within ``width / 2`` of the segment."""
    radius = width / 2
    height, full_width = canvas.shape[:2]
    x0 = max(0, math.floor(min(start[0], end[0]) - radius))
    x1 = min(full_width - 1, math.ceil(max(start[0], end[0]) + radius))
    y0 = max(0, math.floor(min(start[1], end[1]) - radius))
    y1 = min(height - 1, math.ceil(max(start[1], end[1]) + radius))
    if x0 > x1 or y0 > y1:
        return
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    dx, dy = end[0] - start[0], end[1] - start[1]
    length2 = dx * dx + dy * dy
    t = (
        0.0
        if length2 == 0
        else np.clip(((xs - start[0]) * dx + (ys - start[1]) * dy) / length2, 0, 1)
    )
    distance2 = (xs - start[0] - t * dx) ** 2 + (ys - start[1] - t * dy) ** 2
    canvas[y0 : y1 + 1, x0 : x1 + 1][distance2 <= radius * radius] = color


def draw_arrows(canvas: np.ndarray, layout: GridLayout, width: int, color: Color) -> None:
    """One arrow per grid row, A_k -> A'_k and B -> B', on an ``[H, W, 3]`` uint8 array."""
    names = layout.region_names
    for source, target in zip(names[::2], names[1::2], strict=True):
        for start, end in arrow_strokes(*arrow_ends(layout, source, target)):
            paint_stroke(canvas, start, end, width, color)


# --- the whole mark-up -------------------------------------------------------------------


def check_mark_sizes(layout: GridLayout, label_side: int, arrow_width: int) -> None:
    """Labels and arrows must stay well inside a cell; 0 means the paper's size."""
    cell = min(layout.cell_width, layout.cell_height)
    if not 0 <= label_side <= cell // 2:
        raise ValueError(
            f"label_size = {label_side} px is out of range: use 0 (the paper's "
            f"{default_label_side(layout)} px for this cell) or 1 to {cell // 2} px."
        )
    if not 0 <= arrow_width <= cell // 8:
        raise ValueError(
            f"arrow_width = {arrow_width} px is out of range: use 0 (the paper's "
            f"{default_arrow_width(layout)} px for this cell) or 1 to {cell // 8} px."
        )


def mark_grids(
    images: torch.Tensor,
    layout: GridLayout,
    label_side: int = 0,
    label_background: Color = LABEL_BACKGROUND,
    label_text: Color = LABEL_TEXT,
    arrow_color: Color = ARROW_COLOR,
    arrow_width: int = 0,
    labels: bool = True,
    arrows: bool = True,
) -> torch.Tensor:
    """Every grid of a batch with labels and arrows drawn (0 sizes = the paper's)."""
    layout = check_layout(layout)
    check_image(images, "grid")
    check_grid_size(images, layout, "grid")
    check_layout_belongs(images, layout, "grid")
    check_mark_sizes(layout, label_side, arrow_width)
    side = label_side or default_label_side(layout)
    width = arrow_width or default_arrow_width(layout)
    pixels = to_uint8(to_rgb(images))
    for index, canvas in enumerate(pixels):
        if labels:
            image = Image.fromarray(canvas)
            draw_labels(image, layout, side, label_background, label_text)
            pixels[index] = np.asarray(image)
            canvas = pixels[index]
        if arrows:
            draw_arrows(canvas, layout, width, arrow_color)
    return to_float(pixels)
