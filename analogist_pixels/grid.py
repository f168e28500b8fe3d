"""Build the 2x2 analogy grid from A, A', B and cut B' back out of a sampled grid.

Plain torch / numpy / PIL, no ComfyUI import. Images follow ComfyUI's convention
(``[batch, height, width, channels]`` float tensors in 0..1) at the edges of this module;
inside, pixels are uint8 arrays because the paper builds its grid with PIL on 8-bit
images, and matching it byte for byte means resizing exactly as it did.

Float <-> uint8: ``round(clamp(x, 0, 1) * 255)`` and ``k / 255``. Rounding rather than
truncating (ComfyUI's SaveImage truncates) because ``255 * (k / 255)`` in float32 can land
just below ``k``: truncation would turn a loaded image's ``k`` into ``k - 1``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..analogist_attn.geometry import CELL_MULTIPLE, Rect
from .layout import (
    ARRANGEMENT_DEFAULT,
    ARRANGEMENTS,
    FINGERPRINT_SIDE,
    FITS,
    MAX_PAIRS,
    GridLayout,
    Placement,
    check_layout,
    make_layout,
)

log = logging.getLogger("analogist")

# Cells are multiples of CELL_MULTIPLE (64 px; the rule is stated in layout.py).
CELL_STEP = CELL_MULTIPLE
MIN_CELL = CELL_MULTIPLE
# A grid side above 8192 px is a 1024 x 1024 latent: 1M tokens in the first attention
# layers, hours per step and far more memory than any GPU has, while one 8192^2 float
# image is already 805 MB. Larger grids are a mistake, not a use.
MAX_GRID_SIDE = 8192
MAX_CELL = MAX_GRID_SIDE // 2

# The original code calls ``Image.resize((253, 253))`` with no filter; Pillow's default
# for RGB images is BICUBIC (since Pillow 7). Pinned here so a change of default cannot
# silently change the grid.
RESAMPLE = Image.Resampling.BICUBIC

WHITE = 255  # the paper's canvas
BLACK = 0  # the paper's empty B' cell

# Values a little above 1 come from resampling overshoot and are clamped; far above 1 the
# image is in 0..255 and clamping would silently turn it white. The mirror: a little below 0
# is undershoot, far below 0 is a -1..1 image that clamping would turn half black.
MAX_PIXEL = 1.5
MIN_PIXEL = -0.5

# A layout's fingerprint (a thumbnail of the A, A', B cells) matches its grid when their
# mean absolute difference stays under this, in 0..255 per cell: a VAE round trip of an
# 8x8-averaged cell moves it by a few levels; two different pictures by far more.
FINGERPRINT_TOLERANCE = 16.0

# GridCrop's output sizes.
SIZE_ORIGINAL = "original size of B"
SIZE_PLACED = "as placed in the grid"
SIZE_CELL = "whole cell"
OUTPUT_SIZES: tuple[str, ...] = (SIZE_ORIGINAL, SIZE_PLACED, SIZE_CELL)


@dataclass(frozen=True)
class ComposedGrids:
    """GridCompose's results: what the sampler starts from, what the VLM sees, the mask."""

    grid: torch.Tensor  # [N, H, W, 3], B's quadrant copied over B'
    grid_blank: torch.Tensor  # [N, H, W, 3], B' cell black
    mask: torch.Tensor  # [N, H, W], 1 on the B' quadrant
    layout: GridLayout


# --- pixels in, pixels out -------------------------------------------------------------


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float 0..1 -> uint8 with rounding (see the module docstring for why rounding)."""
    clean = torch.nan_to_num(images.detach().float().cpu(), nan=0.0)
    return clean.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).numpy()


def to_float(pixels: np.ndarray) -> torch.Tensor:
    """uint8 -> float32 0..1, exactly ``k / 255``."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).to(torch.float32).div(255.0)


def check_image(images: object, name: str) -> torch.Tensor:
    """Reject what is not a non-empty ComfyUI IMAGE, naming the input."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected an IMAGE tensor, got {type(images).__name__}.")
    if images.ndim != 4:
        raise ValueError(
            f"{name}: expected an IMAGE shaped [batch, height, width, channels], got shape "
            f"{tuple(images.shape)}. Connect an image output (a MASK needs 'Convert Mask to Image')."
        )
    batch, height, width, channels = images.shape
    if batch == 0 or height == 0 or width == 0:
        raise ValueError(
            f"{name} is empty (batch {batch}, {width}x{height} px): connect an image with "
            "at least one pixel."
        )
    if channels not in (1, 2, 3, 4):
        raise ValueError(
            f"{name} has {channels} channels; expected 1 (gray), 2 (gray + alpha), "
            "3 (RGB) or 4 (RGBA). Is it a latent or a mask? Decode or convert it first."
        )
    if not images.is_floating_point():
        raise TypeError(
            f"{name}: expected float pixels in 0..1 (a ComfyUI IMAGE), got {images.dtype}. "
            "Convert with x.float() / 255."
        )
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"{name} has {bad} of {images.numel()} values that are NaN or infinite. The node "
            "before it produced them (often a VAE decoding in float16 overflowing: try a "
            "float32 VAE, e.g. ComfyUI's --fp32-vae); no picture can be made from them."
        )
    top = float(images.max())
    if top > MAX_PIXEL:
        raise ValueError(
            f"{name} has pixel values up to {top:g}, but IMAGE pixels are floats in 0..1. "
            "It looks like a 0..255 image (some packs' nodes return those): divide it by "
            "255 before this node. Without the fix everything above 1 would turn white."
        )
    low = float(images.min())
    if low < MIN_PIXEL:
        raise ValueError(
            f"{name} has pixel values down to {low:g}, but IMAGE pixels are floats in 0..1. "
            "It looks like a -1..1 image (a raw model output some packs' nodes return): "
            "convert it with (x + 1) / 2 before this node. Without the fix everything below "
            "0 would turn black."
        )
    return images


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Any 1-4 channel image as RGB, alpha composited on the white canvas.

    Compositing before resizing keeps transparent edges from bleeding a dark fringe into
    the resized image (the colour under alpha 0 is often black).
    """
    images = torch.nan_to_num(images.float(), nan=0.0).clamp(0.0, 1.0)
    channels = images.shape[-1]
    has_alpha = channels in (2, 4)
    color = images[..., : channels - 1] if has_alpha else images
    if color.shape[-1] == 1:
        color = color.expand(*color.shape[:-1], 3)
    if has_alpha:
        alpha = images[..., -1:]
        color = color * alpha + WHITE / 255.0 * (1.0 - alpha)
    return color


# --- validation of the settings ----------------------------------------------------------


def check_cell_size(value: int, name: str) -> None:
    """A cell side must be a multiple of 64 within the size limit; say the nearest valid ones."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be a whole number of pixels, got {value!r}.")
    if value < MIN_CELL:
        raise ValueError(f"{name} = {value} px is too small: the smallest cell is {MIN_CELL} px.")
    if value > MAX_CELL:
        raise ValueError(
            f"{name} = {value} px is too large: the grid would be {2 * value} px wide/high, "
            f"over the {MAX_GRID_SIDE} px limit (a latent that big cannot be sampled in any "
            f"GPU's memory). Use at most {MAX_CELL} px; the paper uses 256 or 512."
        )
    if value % CELL_STEP:
        below = value // CELL_STEP * CELL_STEP
        above = below + CELL_STEP
        raise ValueError(
            f"{name} = {value} px is not a multiple of {CELL_STEP} (needed so each cell "
            f"edge is a token edge at every UNet level). Nearest valid sizes: {below} or {above}."
        )


def check_border(border: int, cell_width: int, cell_height: int) -> None:
    """At least 1 px (with 0 the paper's ``c + p - 1`` offsets would reach into the
    neighbouring cell) and small enough that the image keeps most of its cell."""
    if not isinstance(border, int) or isinstance(border, bool):
        raise TypeError(f"border must be a whole number of pixels, got {border!r}.")
    largest = min(cell_width, cell_height) // 4
    if border < 1 or border > largest:
        raise ValueError(
            f"border = {border} px is out of range: use 1 to {largest} px for a "
            f"{cell_width}x{cell_height} cell (the paper uses 2)."
        )


def check_choice(value: str, choices: tuple[str, ...], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name} = {value!r} is not one of: {', '.join(map(repr, choices))}.")


def batch_count(sizes: dict[str, int]) -> int:
    """How many grids: batches of equal length N, or 1 (that image is used in every grid)."""
    count = max(sizes.values())
    if any(size not in (1, count) for size in sizes.values()):
        listed = ", ".join(f"{name} has {size}" for name, size in sizes.items())
        raise ValueError(
            f"Batch sizes do not match: {listed}. Each input must hold either 1 image "
            f"(reused for every grid) or the same number N (N grids are made). "
            "Fix: give one example pair (a, a_prime) with N images in b, or equal batches."
        )
    return count


# --- fitting an image into its cell ------------------------------------------------------


def placement_for(source_width: int, source_height: int, paste: Rect, fit: str) -> Placement:
    """Where a ``source_width x source_height`` image goes inside a paste rectangle.

    ``stretch`` fills it (the paper), ``letterbox`` keeps the aspect ratio and centres the
    image with white around it, ``crop`` keeps the aspect ratio and cuts the centre out.
    """
    whole = Rect(0, 0, source_width, source_height)
    if fit == "stretch":
        return Placement(source_width, source_height, fit, whole, paste)
    if fit == "letterbox":
        scale = min(paste.width / source_width, paste.height / source_height)
        width = min(paste.width, max(1, round(source_width * scale)))
        height = min(paste.height, max(1, round(source_height * scale)))
        content = Rect(
            paste.x + (paste.width - width) // 2,
            paste.y + (paste.height - height) // 2,
            width,
            height,
        )
        return Placement(source_width, source_height, fit, whole, content)
    if fit == "crop":
        scale = max(paste.width / source_width, paste.height / source_height)
        width = min(source_width, max(1, round(paste.width / scale)))
        height = min(source_height, max(1, round(paste.height / scale)))
        kept = Rect((source_width - width) // 2, (source_height - height) // 2, width, height)
        return Placement(source_width, source_height, fit, kept, paste)
    raise ValueError(f"fit = {fit!r} is not one of {FITS}.")


def fit_image(pixels: np.ndarray, placement: Placement) -> np.ndarray:
    """The uint8 RGB pixels that go into ``placement.content``."""
    crop = placement.source_crop
    image = Image.fromarray(pixels[crop.y : crop.bottom, crop.x : crop.right])
    content = placement.content
    return np.asarray(image.resize((content.width, content.height), RESAMPLE))


def _fitted(images: torch.Tensor, paste: Rect, fit: str) -> list[tuple[np.ndarray, Placement]]:
    """Each image of a batch fitted into ``paste`` (all share one size: it is one tensor)."""
    pixels = to_uint8(to_rgb(images))
    _, height, width, _ = pixels.shape
    placement = placement_for(width, height, paste, fit)
    return [(fit_image(one, placement), placement) for one in pixels]


def _put(canvas: np.ndarray, rect: Rect, pixels: np.ndarray | int) -> None:
    canvas[rect.y : rect.bottom, rect.x : rect.right] = pixels


def _copy_cell(canvas: np.ndarray, source: Rect, target: Rect) -> None:
    canvas[..., target.y : target.bottom, target.x : target.right, :] = canvas[
        ..., source.y : source.bottom, source.x : source.right, :
    ]


# --- GridCompose -------------------------------------------------------------------------


def compose_grids(
    a: torch.Tensor,
    a_prime: torch.Tensor,
    b: torch.Tensor,
    cell_width: int = 256,
    cell_height: int = 256,
    border: int = 2,
    fit: str = "stretch",
    arrangement: str = ARRANGEMENTS[0],
    examples: tuple[tuple[torch.Tensor, torch.Tensor], ...] = (),
) -> ComposedGrids:
    """The paper's grid for every analogy in the batch.

    ``examples``: example pairs 2..K ``(A_k, A'_k)`` after ``(a, a_prime)``; each adds a
    row (a column for "A aligned with B") above the query row ``B | B'``.

    ``grid_blank``: a white canvas with A, A', B fitted into their cells at the paper's
    offsets and a black square where B' goes (what the vision-language model sees).
    ``grid``: the same with B's whole quadrant copied over B''s, because the sampler
    starts from that image noised (denoise 0.98), so B' begins as a noisy B.
    """
    check_cell_size(cell_width, "cell_width")
    check_cell_size(cell_height, "cell_height")
    check_border(border, cell_width, cell_height)
    check_choice(fit, FITS, "fit")
    check_choice(arrangement, ARRANGEMENTS, "arrangement")
    pairs = check_examples(examples, cell_width, cell_height, arrangement)
    inputs = {"a": a, "a_prime": a_prime}
    for k, (a_k, a_prime_k) in enumerate(examples, start=2):
        inputs[f"a{k}"], inputs[f"a{k}_prime"] = a_k, a_prime_k
    inputs["b"] = b
    for name, images in inputs.items():
        check_image(images, _input_name(name))
    count = batch_count({_input_name(name): images.shape[0] for name, images in inputs.items()})

    # Paste rectangles first; the layout proper also needs the placements they lead to.
    geometry = make_layout(cell_width, cell_height, border, arrangement, fit, pairs=pairs)
    fitted = {name: _fitted(images, geometry.paste(name), fit) for name, images in inputs.items()}
    b_placements = tuple(fitted["b"][i % len(fitted["b"])][1] for i in range(count))
    layout = make_layout(
        cell_width, cell_height, border, arrangement, fit, b_placements, pairs=pairs
    )

    blank = np.full((count, layout.grid_height, layout.grid_width, 3), WHITE, np.uint8)
    for index, canvas in enumerate(blank):
        for name in inputs:
            pixels, placement = fitted[name][index % len(fitted[name])]
            _put(canvas, placement.content, pixels)
        # The empty B' is the paste rectangle, whatever the fit: the paper's black square.
        _put(canvas, layout.paste("b_prime"), BLACK)
    pasted = blank.copy()
    _copy_cell(pasted, layout.cell("b"), layout.cell("b_prime"))
    layout = dataclasses.replace(
        layout, fingerprints=tuple(fingerprint(one, layout) for one in blank)
    )
    _remember(layout)

    return ComposedGrids(
        grid=to_float(pasted),
        grid_blank=to_float(blank),
        mask=quadrant_mask(layout, count),
        layout=layout,
    )


def _input_name(region: str) -> str:
    """How an error names a region's input: a, a_prime, b, or 'examples pair k A'_k'."""
    if region in ("a", "a_prime", "b"):
        return region
    k = region[1:].split("_")[0]
    return f"examples pair {k} ({'a_prime' if region.endswith('_prime') else 'a'})"


def check_examples(examples: object, cell_width: int, cell_height: int, arrangement: str) -> int:
    """K, the number of example pairs (a, a_prime plus ``examples``); clear errors for a
    wrong value, too many pairs, or a grid over the size limit."""
    if not isinstance(examples, (tuple, list)) or not all(
        isinstance(pair, (tuple, list)) and len(pair) == 2 for pair in examples
    ):
        raise TypeError(
            "examples: expected the EXAMPLES output of Analogist Example Pair (pairs of "
            f"images), got {type(examples).__name__} ({str(examples)[:60]!r})."
        )
    pairs = 1 + len(examples)
    if pairs > MAX_PAIRS:
        raise ValueError(
            f"examples: {pairs} example pairs (a, a_prime plus {len(examples)} chained), but "
            f"at most {MAX_PAIRS} fit: each pair adds a row of cells to the grid and the "
            "UNet's self-attention time and memory grow with the square of the grid's size "
            f"({MAX_PAIRS} pairs at cell 256 is a 512 x {256 * (MAX_PAIRS + 1)} px grid, "
            "about 6x the paper's attention work). Remove Example Pair nodes from the chain."
        )
    long_side = (pairs + 1) * (cell_height if arrangement == ARRANGEMENT_DEFAULT else cell_width)
    if long_side > MAX_GRID_SIDE:
        raise ValueError(
            f"examples: {pairs} example pairs with these cells make a grid {long_side} px "
            f"long, over the {MAX_GRID_SIDE} px limit (a latent that big cannot be sampled "
            "in any GPU's memory). Use smaller cells or fewer pairs."
        )
    return pairs


def quadrant_mask(layout: GridLayout, count: int) -> torch.Tensor:
    """1 on the whole B' quadrant, 0 elsewhere: the inpainting mask of the paper."""
    mask = torch.zeros(count, layout.grid_height, layout.grid_width, dtype=torch.float32)
    cell = layout.cell("b_prime")
    mask[:, cell.y : cell.bottom, cell.x : cell.right] = 1.0
    return mask


# --- does a layout belong to a grid? ------------------------------------------------------


def _thumbnails(pixels: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """``[H, W, 3]`` pixels in 0..255 -> ``[cells, side, side, 3]``: every cell but B' (A, A',
    further pairs, B) averaged down to ``FINGERPRINT_SIDE`` px a side (cells are multiples
    of 64, so blocks are whole)."""
    side = FINGERPRINT_SIDE
    cells = []
    for name in _fingerprinted(layout):
        rect = layout.cell(name)
        cell = pixels[rect.y : rect.bottom, rect.x : rect.right, :].float()
        blocks = cell.reshape(side, rect.height // side, side, rect.width // side, 3)
        cells.append(blocks.mean(dim=(1, 3)))
    return torch.stack(cells)


def _fingerprinted(layout: GridLayout) -> tuple[str, ...]:
    """The cells a fingerprint covers: all but B' (pair 1's A, A' first, then B, as before
    for one pair; further pairs after them)."""
    names = layout.region_names
    return ("a", "a_prime", "b") + tuple(
        n for n in names if n not in ("a", "a_prime", "b", "b_prime")
    )


def fingerprint(canvas: np.ndarray, layout: GridLayout) -> bytes:
    """The fingerprint of one composed uint8 grid (see ``GridLayout.fingerprints``)."""
    thumbs = _thumbnails(torch.from_numpy(np.ascontiguousarray(canvas)), layout)
    return thumbs.round().clamp(0, 255).to(torch.uint8).numpy().tobytes()


def _differences(image: torch.Tensor, layout: GridLayout, print_: bytes) -> float:
    """Largest per-cell mean absolute difference (0..255) between an RGB 0..1 grid and a
    fingerprint."""
    side = FINGERPRINT_SIDE
    thumbs = _thumbnails(image.clamp(0.0, 1.0) * 255.0, layout)
    recorded = (
        torch.frombuffer(bytearray(print_), dtype=torch.uint8).float().reshape(-1, side, side, 3)
    )
    if recorded.shape[0] != thumbs.shape[0]:
        return float("inf")
    return float((thumbs - recorded).abs().mean(dim=(1, 2, 3)).max())


# Fingerprints of the grids composed in this process (newest last), to name the Grid
# Compose a grid really came from when the connected layout is not its own.
_RECENT_LIMIT = 256
_recent: OrderedDict[tuple[int, int, bytes], GridLayout] = OrderedDict()
_recent_lock = threading.Lock()


def _remember(layout: GridLayout) -> None:
    with _recent_lock:
        for print_ in layout.fingerprints:
            key = (layout.grid_width, layout.grid_height, print_)
            _recent[key] = layout
            _recent.move_to_end(key)
        while len(_recent) > _RECENT_LIMIT:
            _recent.popitem(last=False)


def _describe(layout: GridLayout) -> str:
    sizes = sorted({f"{p.source_width}x{p.source_height}" for p in layout.b_placements})
    return f"B of {', '.join(sizes) or 'unknown size'}, fit {layout.fit}, {layout.arrangement}"


def check_layout_belongs(grids: torch.Tensor, layout: GridLayout, name: str = "grid") -> None:
    """Is ``layout`` the one made with these grids? Compared by the A, A', B cells.

    * they match the layout's fingerprints: fine;
    * they match a grid composed with another layout in this process: a ``ValueError``
      naming both (the B' would be cut with the wrong placement, at the wrong size);
    * they match nothing known (the whole grid was regenerated, or a model's VAE does not
      reconstruct it): the layout cannot be confirmed, and a warning says so.
    """
    if not layout.fingerprints:
        return
    rgb = to_rgb(grids)
    unconfirmed = []
    for index, image in enumerate(rgb):
        own = layout.fingerprints[index % len(layout.fingerprints)]
        difference = _differences(image, layout, own)
        if difference <= FINGERPRINT_TOLERANCE:
            continue
        with _recent_lock:
            candidates = [
                other
                for (w, h, print_), other in reversed(_recent.items())
                if (w, h) == (layout.grid_width, layout.grid_height)
                and print_ not in layout.fingerprints
                and _differences(image, other, print_) <= FINGERPRINT_TOLERANCE
            ]
        if candidates:
            raise ValueError(
                f"{name} image {index} was made by another Analogist Grid Compose ({_describe(candidates[0])}) "
                f"than the one whose layout is connected ({_describe(layout)}): its A, A', B "
                "cells are not the ones this layout was made with, so B' would be cut out at "
                "the wrong place or size. Connect the layout from the Grid Compose that made "
                "this grid."
            )
        unconfirmed.append((index, difference))
    if unconfirmed:
        index, difference = max(unconfirmed, key=lambda item: item[1])
        log.warning(
            "[Analogist] %s: cannot confirm that the connected layout belongs to this grid: "
            "the A, A', B cells of %d of %d image(s) differ from the ones the layout was made "
            "with (by up to %.0f of 255 on average; a VAE round trip stays under %.0f). Fine if "
            "the sampler regenerated the whole grid; otherwise connect the layout from the Grid "
            "Compose that made this grid, or B' may be cut at the wrong place or size.",
            name,
            len(unconfirmed),
            rgb.shape[0],
            difference,
            FINGERPRINT_TOLERANCE,
        )


# --- GridCrop ----------------------------------------------------------------------------


def check_grid_size(images: torch.Tensor, layout: GridLayout, name: str) -> None:
    """The grid must be the size the layout describes, or every region would be off."""
    _, height, width, _ = images.shape
    if (width, height) != (layout.grid_width, layout.grid_height):
        raise ValueError(
            f"{name} is {width}x{height} px but the layout describes a "
            f"{layout.grid_width}x{layout.grid_height} px grid (cells "
            f"{layout.cell_width}x{layout.cell_height}). Connect the layout from the "
            "GridCompose that made this grid, and do not resize the grid in between."
        )


def b_placements_of(layout: GridLayout) -> tuple[Placement, ...]:
    """The recorded placements of B; a layout built without any is read as stretch at the
    paste size (nothing to undo)."""
    if layout.b_placements:
        return layout.b_placements
    paste = layout.paste("b")
    return (placement_for(paste.width, paste.height, paste, "stretch"),)


def placement_per_image(layout: GridLayout, count: int) -> list[Placement]:
    """Match ``count`` sampled images to the layout's grids.

    A sampler may return k images per grid. ComfyUI repeats a batch as a whole
    (RepeatLatentBatch: grid 0..N-1, then 0..N-1 again), so image ``i`` is grid ``i % N``.
    """
    placements = b_placements_of(layout)
    grids = len(placements)
    if count % grids:
        raise ValueError(
            f"grid has {count} images but the layout was made for {grids} grids: the batch "
            f"must be a multiple of {grids} (k samples of each grid, in the sampler's order). "
            "Connect the layout from the GridCompose that made these grids."
        )
    return [placements[i % grids] for i in range(count)]


def b_prime_rect(layout: GridLayout, placement: Placement) -> Rect:
    """Where B''s content lies: B's content moved by the quadrant offset.

    The quadrant offset, not the paste offset (they differ by 1 px in x or y): the
    sampler starts from B's quadrant copied over B''s, and SAC pairs positions quadrant
    to quadrant, so the generated B' lines up with B's quadrant.
    """
    b_cell, b_prime_cell = layout.cell("b"), layout.cell("b_prime")
    content = placement.content
    return Rect(
        content.x + b_prime_cell.x - b_cell.x,
        content.y + b_prime_cell.y - b_cell.y,
        content.width,
        content.height,
    )


def resize(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Resize one ``[H, W, C]`` float image, bicubic with antialiasing (as PIL does), in
    float so the sampler's output is not quantised to 8 bits on the way."""
    if image.shape[0] == height and image.shape[1] == width:
        return image
    chw = image.permute(2, 0, 1).unsqueeze(0).float()
    out = F.interpolate(chw, size=(height, width), mode="bicubic", antialias=True)
    return out.squeeze(0).permute(1, 2, 0).clamp(0.0, 1.0)


def _cut(image: torch.Tensor, rect: Rect) -> torch.Tensor:
    return image[rect.y : rect.bottom, rect.x : rect.right, :]


def crop_b_prime(
    grids: torch.Tensor, layout: GridLayout, output_size: str = SIZE_ORIGINAL
) -> torch.Tensor:
    """B' out of each sampled grid, by default at B's original size.

    ``original size of B`` undoes the fit: stretch and letterbox give B's full size and
    aspect ratio; crop gives the centre part of B that was kept, at its original pixel
    size (the cut-off margins were never generated). ``as placed in the grid`` is the
    content rectangle without resampling; ``whole cell`` the whole B' quadrant.

    Images of different target sizes cannot share a batch tensor; they are resized to the
    first one's size with a warning (one GridCompose never makes that: all B in a batch
    share a size).
    """
    layout = check_layout(layout)
    check_image(grids, "grid")
    check_grid_size(grids, layout, "grid")
    check_choice(output_size, OUTPUT_SIZES, "output_size")
    placements = placement_per_image(layout, grids.shape[0])
    check_layout_belongs(grids, layout, "grid")
    rgb = to_rgb(grids)
    crops = [
        _restore(image, layout, placement, output_size)
        for image, placement in zip(rgb, placements, strict=True)
    ]
    return _stack_same_size(crops)


def _restore(
    image: torch.Tensor, layout: GridLayout, placement: Placement, output_size: str
) -> torch.Tensor:
    if output_size == SIZE_CELL:
        return _cut(image, layout.cell("b_prime"))
    content = _cut(image, b_prime_rect(layout, placement))
    if output_size == SIZE_PLACED:
        return content
    kept = placement.source_crop
    return resize(content, kept.width, kept.height)


def _stack_same_size(images: list[torch.Tensor]) -> torch.Tensor:
    height, width = images[0].shape[:2]
    if any(image.shape[:2] != (height, width) for image in images):
        log.warning(
            "[Analogist] GridCrop: the B' images have different sizes; all are resized to "
            "the first one's %dx%d px so they fit in one batch.",
            width,
            height,
        )
        images = [resize(image, width, height) for image in images]
    return torch.stack(images).contiguous()


def strip(grids: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """A | A' | B | B' side by side (every pair's cells first with several), one row per
    sampled grid, for a quick look."""
    layout = check_layout(layout)
    check_image(grids, "grid")
    check_grid_size(grids, layout, "grid")
    rgb = to_rgb(grids)
    cells = [
        rgb[:, rect.y : rect.bottom, rect.x : rect.right, :]
        for rect in (layout.cell(name) for name in layout.region_names)
    ]
    return torch.cat(cells, dim=2).contiguous()
