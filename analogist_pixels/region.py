"""Region of interest on B: only part of B may change (ImageBrush's box, any mask).

An optional MASK on B (at B's size) marks what may change. Everything here follows from
one rule, stated once:

* **The region.** A pixel of B is in the region when its mask value is at least
  :data:`REGION_THRESHOLD` (0.5): a box drawn in ComfyUI's mask editor is 0/1, a soft
  mask counts by its majority.
* **Into the grid.** The region goes through the same placement as B (fit stretch,
  letterbox or crop) to B's content rectangle, then by the quadrant offset into B' (as
  :func:`grid.b_prime_rect`). A grid pixel is in the mapped region when its footprint on
  B (the source pixels it covers at the placement's scale) touches a region pixel: the
  mapping never loses a thin region, it can only grow it by under one source pixel.
* **Latent resolution.** The sampler works on 8x8 px latent pixels. The inpainting mask
  is the mapped region grown to whole latent pixels: a latent pixel is masked when any of
  its 64 pixels is in the region. So the mask is binary at latent resolution (ComfyUI's
  bilinear resize to the latent reproduces it exactly) and a region edge inside a latent
  pixel is regenerated up to that latent pixel's edge; Grid Crop then puts B's own pixels
  back outside the region (with a feather), so the extra ring never shows as a change.
* **Tokens (CAM "text only in the region").** A B' token of an ``h x w`` map is inside
  when any of its pixels is in the mapped region, equivalently any of its latent pixels
  is masked (tokens are whole blocks of latent pixels because cells are multiples of
  64 px).

The layout carries, per grid, a :class:`BRegion`: the region as packed bits in B's source
pixels and B's own RGB pixels (8-bit), so Grid Crop can composite B' over the original B
without another input. Plain data (bytes), frozen like the layout.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from ..analogist_attn.geometry import VAE_FACTOR
from . import grid as grid_math
from .layout import BRegion, GridLayout, Placement

REGION_THRESHOLD = 0.5
# Grid Crop's feather, in pixels of its output image: B' is blended into B over this many
# pixels outside the region. 4 px hides the seam where generated pixels meet B's own.
# The sampler regenerates whole latent pixels, so the ring it redrew around the region is
# 0 to 7 grid px wide (0 where the region's edge lies on the 8 px latent grid); where the
# feather reaches past it, it blends B with the B' pixels the sampler kept (B after the
# VAE round trip), which adds nothing new.
DEFAULT_FEATHER = 4
MAX_FEATHER = 256

INPUT = "b_region"
NO_MASK_PAINTED = (
    "No mask painted on B: right-click B's Load Image, Open in MaskEditor, paint the part of B "
    "that may change and save; or disconnect b_region to let the whole B' change."
)


# --- checking the input ------------------------------------------------------------------


def check_region_mask(mask: object, b: torch.Tensor, count: int) -> torch.Tensor:
    """The ``b_region`` MASK as booleans ``[M, H, W]`` (M = 1 or the number of grids)."""
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{INPUT}: expected a MASK tensor, got {type(mask).__name__}.")
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise ValueError(
            f"{INPUT}: expected a MASK shaped [batch, height, width], got shape "
            f"{tuple(mask.shape)}. Connect a MASK output (Load Image's mask, Load Image (as "
            "Mask), or a mask node); an IMAGE needs 'Convert Image to Mask' first."
        )
    _, height, width, _ = b.shape
    if tuple(mask.shape[1:]) != (height, width):
        size = (
            f"{INPUT} is {mask.shape[2]}x{mask.shape[1]} px but b is {width}x{height} px; Load "
            "Image gives a 64x64 empty mask for an image without a painted mask"
        )
        if not bool((mask >= REGION_THRESHOLD).any()):
            raise ValueError(f"{NO_MASK_PAINTED} ({size}.)")
        raise ValueError(
            "The region mask is not the size of B: draw it in the mask editor of B's Load "
            "Image (right-click it, Open in MaskEditor) and connect that node's MASK output to "
            f"b_region, or resize the mask to B's size. ({size}.)"
        )
    if mask.shape[0] not in (1, count):
        raise ValueError(
            f"{INPUT} has {mask.shape[0]} masks for {count} grids: give 1 mask (used for every "
            f"B) or one per grid ({count})."
        )
    if not bool(torch.isfinite(mask).all()):
        raise ValueError(f"{INPUT} has NaN or infinite values; connect a mask in 0..1.")
    region = mask.detach().float().cpu() >= REGION_THRESHOLD
    for index, one in enumerate(region):
        if not bool(one.any()):
            which = "" if region.shape[0] == 1 else f" (mask {index})"
            raise ValueError(
                f"{NO_MASK_PAINTED} ({INPUT} is empty{which}: no pixel reaches "
                f"{REGION_THRESHOLD}, largest value {float(mask[index].max()):g}.)"
            )
    return region


# --- mapping the region into the grid ----------------------------------------------------


def _footprints(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``dst`` output pixels, the source pixels ``[lo, hi)`` it covers when
    ``src`` pixels are resampled to ``dst`` (pixel ``i`` spans ``[i*src/dst, (i+1)*src/dst)``)."""
    i = np.arange(dst, dtype=np.int64)
    lo = i * src // dst
    hi = -(-(i + 1) * src // dst)
    return lo, np.maximum(hi, lo + 1)


def resample_region(region: np.ndarray, width: int, height: int) -> np.ndarray:
    """A boolean region resampled to ``width x height``: an output pixel is in when its
    footprint touches a region pixel (exact, by an integral image)."""
    src_h, src_w = region.shape
    integral = np.zeros((src_h + 1, src_w + 1), np.int64)
    integral[1:, 1:] = region.astype(np.int64).cumsum(0).cumsum(1)
    y0, y1 = _footprints(src_h, height)
    x0, x1 = _footprints(src_w, width)
    total = integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0]
    return total > 0


def placed_region(region: np.ndarray, placement: Placement) -> np.ndarray:
    """The region as placed: boolean ``[content.height, content.width]``."""
    crop = placement.source_crop
    kept = region[crop.y : crop.bottom, crop.x : crop.right]
    return resample_region(kept, placement.content.width, placement.content.height)


def b_prime_region(layout: GridLayout, index: int) -> np.ndarray:
    """Grid ``index``'s region mapped into B': boolean ``[grid_height, grid_width]``."""
    regions, placements = layout_regions(layout), grid_math.b_placements_of(layout)
    region, placement = regions[index % len(regions)], placements[index % len(placements)]
    out = np.zeros((layout.grid_height, layout.grid_width), bool)
    rect = grid_math.b_prime_rect(layout, placement)
    out[rect.y : rect.bottom, rect.x : rect.right] = placed_region(region.mask(), placement)
    return out


def to_latent_pixels(mask: np.ndarray, factor: int = VAE_FACTOR) -> np.ndarray:
    """Grow a boolean ``[H, W]`` pixel mask to whole ``factor x factor`` blocks (H, W are
    multiples of ``factor``; grids are multiples of 128 px)."""
    height, width = mask.shape
    blocks = mask.reshape(height // factor, factor, width // factor, factor).any(axis=(1, 3))
    return blocks.repeat(factor, 0).repeat(factor, 1)


def region_masks(layout: GridLayout, count: int) -> torch.Tensor:
    """The inpainting mask of grids ``0..count-1``: the region in B', whole latent pixels."""
    masks = [to_latent_pixels(b_prime_region(layout, i)) for i in range(count)]
    return torch.from_numpy(np.stack(masks)).to(torch.float32)


def layout_regions(layout: GridLayout) -> tuple[BRegion, ...]:
    return tuple(getattr(layout, "b_regions", ()) or ())


def has_region(layout: GridLayout) -> bool:
    return bool(layout_regions(layout))


# --- Grid Compose with a region ----------------------------------------------------------


def with_region(
    composed: grid_math.ComposedGrids, b: torch.Tensor, b_region: torch.Tensor
) -> grid_math.ComposedGrids:
    """GridCompose's outputs for a region on B: the mask becomes the region in B' (whole
    latent pixels) and the layout carries the region and B's pixels for Grid Crop. The
    grids are unchanged: B' starts as a copy of B, and the sampler keeps it outside the
    mask."""
    layout = composed.layout
    count = composed.grid.shape[0]
    region = check_region_mask(b_region, b, count)
    b_pixels = grid_math.to_uint8(grid_math.to_rgb(b))
    height, width = region.shape[1:]
    packed = [np.packbits(one.numpy().reshape(-1)).tobytes() for one in region]
    shared: dict[tuple[int, int], BRegion] = {}
    regions = []
    for i in range(count):
        key = (i % len(packed), i % len(b_pixels))
        if key not in shared:
            shared[key] = BRegion(width, height, packed[key[0]], b_pixels[key[1]].tobytes())
        regions.append(shared[key])
    layout = dataclasses.replace(layout, b_regions=tuple(regions))
    placements = grid_math.b_placements_of(layout)
    for i in range(count):
        placement = placements[i % len(placements)]
        if not placed_region(regions[i].mask(), placement).any():
            crop = placement.source_crop
            which = "" if region.shape[0] == 1 else f" (mask {i % region.shape[0]})"
            raise ValueError(
                f"{INPUT} lies outside the part of B that is in the grid{which}: fit = "
                f"{placement.fit!r} keeps B's pixels x {crop.x}..{crop.right - 1}, y "
                f"{crop.y}..{crop.bottom - 1} and the region has none of them. Move the region "
                "into the centre of B, or use fit = stretch or letterbox (they keep all of B)."
            )
    # Not remembered again for the "which Grid Compose made this grid" check: the region-less
    # layout compose_grids remembered has the same fingerprints and description, and the
    # process-wide list should not keep B's pixels alive.
    return dataclasses.replace(composed, mask=region_masks(layout, count), layout=layout)


# --- Grid Crop: B' over the original B outside the region --------------------------------


def feather_weights(region: np.ndarray, feather: int) -> torch.Tensor:
    """1 on the region, ``1 - d / (feather + 1)`` at chessboard distance ``d <= feather``
    outside it, 0 further away: ``[H, W]`` float32."""
    inside = torch.from_numpy(np.ascontiguousarray(region)).float()[None, None]
    weights = inside.clone()
    grown = inside
    for d in range(1, feather + 1):
        grown = F.max_pool2d(grown, 3, stride=1, padding=1)
        ring = (grown > 0) & (weights == 0)
        weights[ring] = 1.0 - d / (feather + 1)
    return weights[0, 0]


def check_feather(feather: object) -> int:
    if isinstance(feather, bool) or not isinstance(feather, int):
        raise TypeError(f"feather must be a whole number of pixels, got {feather!r}.")
    if not 0 <= feather <= MAX_FEATHER:
        raise ValueError(
            f"feather = {feather} px is out of range: use 0 (hard edge) to {MAX_FEATHER} px "
            f"(default {DEFAULT_FEATHER})."
        )
    return feather


def _original_and_region(
    layout: GridLayout, region: BRegion, placement: Placement, output_size: str
) -> tuple[np.ndarray, np.ndarray]:
    """B's own pixels and the region, in the coordinates of Grid Crop's output."""
    source, mask = region.image(), region.mask()
    if output_size == grid_math.SIZE_ORIGINAL:
        kept = placement.source_crop
        return source[kept.y : kept.bottom, kept.x : kept.right], mask[
            kept.y : kept.bottom, kept.x : kept.right
        ]
    fitted, placed = (
        np.array(grid_math.fit_image(source, placement)),
        placed_region(mask, placement),
    )
    if output_size == grid_math.SIZE_PLACED:
        return fitted, placed
    cell, content = layout.cell("b"), placement.content
    image = np.full((cell.height, cell.width, 3), grid_math.WHITE, np.uint8)
    where = np.zeros((cell.height, cell.width), bool)
    x, y = content.x - cell.x, content.y - cell.y
    image[y : y + content.height, x : x + content.width] = fitted
    where[y : y + content.height, x : x + content.width] = placed
    return image, where


def composite_over_b(
    b_prime: torch.Tensor, layout: GridLayout, output_size: str, feather: int = DEFAULT_FEATHER
) -> torch.Tensor:
    """Grid Crop's B' (``[N, h, w, 3]``) with B's own pixels outside the region.

    Inside the region: B' as generated. Within ``feather`` px outside it: a linear blend
    toward B. Further out: exactly B's pixels (``k / 255``), so unmasked pixels come back
    unchanged. At ``original size of B`` with ``fit = crop`` the result is the whole of B
    (the margins the grid cut off are B's own pixels). Image ``i`` belongs to grid
    ``i mod N`` as in Grid Crop.
    """
    feather = check_feather(feather)
    regions = layout_regions(layout)
    placements = grid_math.placement_per_image(layout, b_prime.shape[0])
    out = []
    for index, (image, placement) in enumerate(zip(b_prime, placements, strict=True)):
        region = regions[index % len(regions)]
        kept = placement.source_crop
        if (
            output_size == grid_math.SIZE_ORIGINAL
            and (kept.width, kept.height)
            != (
                region.width,
                region.height,
            )
            and tuple(image.shape[:2]) == (kept.height, kept.width)
        ):
            # fit = crop: the margins cut off for the grid are B's own pixels, outside the
            # region by construction, so the composite is the whole of B, not its centre.
            whole = grid_math.to_float(region.image()).to(image.device)
            whole[kept.y : kept.bottom, kept.x : kept.right] = image.float()
            image = whole
            original, where = region.image(), region.mask()
        else:
            original, where = _original_and_region(layout, region, placement, output_size)
        if tuple(original.shape[:2]) != tuple(image.shape[:2]):
            raise ValueError(
                f"Grid Crop: B' image {index} is {image.shape[1]}x{image.shape[0]} px but B's "
                f"region is {original.shape[1]}x{original.shape[0]} px in it; this layout's B "
                "images differ in size. Use one Grid Compose per B size."
            )
        weights = feather_weights(where, feather).to(image.device)[..., None]
        b_pixels = grid_math.to_float(original).to(image.device)
        blended = b_pixels + weights * (image.float() - b_pixels)
        # Exactly B' inside, exactly B outside (no float round trip through the blend).
        out.append(
            torch.where(weights >= 1, image.float(), torch.where(weights > 0, blended, b_pixels))
        )
    if len({tuple(one.shape) for one in out}) > 1:
        raise ValueError(
            "Grid Crop: this layout's B images differ in size, so their B' (composited over "
            "each whole B) cannot share one batch. Use one Grid Compose per B size."
        )
    return torch.stack(out).contiguous()


# --- CAM: text only in the region --------------------------------------------------------


def latent_regions(layout: GridLayout) -> np.ndarray:
    """Every grid's region in B' at latent resolution: boolean ``[G, H/8, W/8]``, what
    :class:`~analogist_attn.geometry.RegionTokensInside` takes for CAM's "text only in the
    region"."""
    if not has_region(layout):
        raise ValueError("this layout has no region on B")
    latent = []
    for i in range(len(layout.b_regions)):
        pixels = b_prime_region(layout, i)
        height, width = pixels.shape
        latent.append(
            pixels.reshape(height // VAE_FACTOR, VAE_FACTOR, width // VAE_FACTOR, VAE_FACTOR).any(
                axis=(1, 3)
            )
        )
    return np.stack(latent)
