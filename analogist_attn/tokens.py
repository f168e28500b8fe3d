"""Where the grid's regions fall on a transformer block's token map.

A UNet transformer block sees the latent as an ``h x w`` token map flattened row-major
(token index ``y * w + x``). SAC and CAM pair local position ``i`` of one region with
local position ``i`` of another, so each region's tokens are listed in its own
row-major order: entry ``i`` of ``a`` and entry ``i`` of ``b_prime`` sit at the same
offset from their region's top-left corner.

The index tensors are needed at every UNet call (every step, every block), so they are
built once per (layout, map size, device) and cached; callers must not modify them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch

from .layout import REGION_LABELS, REGIONS

Fractions = Mapping[str, Sequence[float]]
_FractionKey = tuple[tuple[float, float, float, float], ...]

# SD's VAE maps 8x8 pixels to one latent; the UNet then halves the map at each level.
VAE_FACTOR = 8
# SD1.x/SD2.x/SDXL go down three times (factor 8), so a token of the deepest level
# covers 64 px: cell sizes that are multiples of 64 px line up at every level.
DEEPEST_TOKEN_PX = 64
_MAX_DOWNSAMPLE_POWER = 7
# Fractions come from integer pixel rectangles; this only absorbs float rounding.
_EDGE_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class RegionTokens:
    """Token indices of the four regions on one ``h x w`` map (cached, read-only).

    ``sac_untouched`` lists the tokens whose self-attention rows SAC leaves as they are
    (everything outside A' and B'); ``outside_a_prime`` / ``outside_b_prime`` list every
    token but A' / B', the keys whose logits the rows of B' / A' keep. CAM silences the
    text for A, A' and B; ``cam_rows`` lists the tokens it still computes (B', plus any
    token outside the four regions, which the paper's quadrant grids never have) and
    ``cam_keep`` marks them.
    """

    h: int
    w: int
    a: torch.Tensor
    a_prime: torch.Tensor
    b: torch.Tensor
    b_prime: torch.Tensor
    sac_untouched: torch.Tensor
    outside_a_prime: torch.Tensor
    outside_b_prime: torch.Tensor
    cam_rows: torch.Tensor
    cam_keep: torch.Tensor

    @property
    def n_tokens(self) -> int:
        return self.h * self.w

    @property
    def region_size(self) -> int:
        """Tokens per region (all four have the same shape)."""
        return int(self.a.numel())

    def region(self, name: str) -> torch.Tensor:
        return {"a": self.a, "a_prime": self.a_prime, "b": self.b, "b_prime": self.b_prime}[name]


def region_tokens(
    fractions: Fractions, h: int, w: int, device: torch.device | str | None = None
) -> RegionTokens:
    """Token indices of A, A', B, B' on an ``h x w`` token map.

    ``fractions`` is :meth:`GridLayout.cell_fractions`. Raises ``ValueError`` when a
    region edge falls inside a token or the regions differ in shape, since the
    position-to-position pairing of SAC would then be meaningless.
    """
    key = _fraction_key(fractions)
    return _cached_region_tokens(key, int(h), int(w), torch.device(device or "cpu"))


def token_map_size(original_shape: Sequence[int], n_tokens: int) -> tuple[int, int]:
    """The ``(h, w)`` token map of a block from the latent shape and its token count.

    ComfyUI hands attention patches the latent shape (``extra_options["original_shape"]``,
    ``[B, C, H, W]``) but not the block's map size; each UNet level halves the map with a
    stride-2 convolution (rounding up), so the map is ``ceil(H/f) x ceil(W/f)`` for the
    ``f = 2**k`` whose token count matches.
    """
    height, width = _latent_hw(original_shape)
    h, w, _ = _token_map(height, width, n_tokens)
    return h, w


def regions_for_block(
    fractions: Fractions,
    original_shape: Sequence[int],
    n_tokens: int,
    device: torch.device | str | None = None,
) -> RegionTokens:
    """Region tokens for one attention call (what a patch calls; cached).

    A map that is not an exact downsample of the latent (``H`` not divisible by ``f``)
    can still look aligned in token units while its tokens straddle the real cell edges,
    so the check is done in latent units, where the error can also name pixel sizes.
    """
    height, width = _latent_hw(original_shape)
    key = _fraction_key(fractions)
    return _cached_block_regions(key, height, width, int(n_tokens), torch.device(device or "cpu"))


@lru_cache(maxsize=256)
def _cached_block_regions(
    key: _FractionKey, height: int, width: int, n_tokens: int, device: torch.device
) -> RegionTokens:
    h, w, factor = _token_map(height, width, n_tokens)
    _check_latent_alignment(key, height, width, factor)
    return _cached_region_tokens(key, h, w, device)


def _latent_hw(original_shape: Sequence[int]) -> tuple[int, int]:
    if len(original_shape) < 2:
        raise ValueError(f"original_shape {list(original_shape)} has no height and width")
    return int(original_shape[-2]), int(original_shape[-1])


def _token_map(height: int, width: int, n_tokens: int) -> tuple[int, int, int]:
    """``(h, w, f)``: the map of ``n_tokens`` tokens and its downsample factor."""
    for power in range(_MAX_DOWNSAMPLE_POWER + 1):
        factor = 2**power
        h, w = math.ceil(height / factor), math.ceil(width / factor)
        if h * w == n_tokens:
            return h, w, factor
    raise ValueError(
        f"Cannot match {n_tokens} attention tokens to the {height} x {width} latent: no "
        f"downsample factor 1..{2**_MAX_DOWNSAMPLE_POWER} gives that many tokens. Analogist's "
        "attention edits need a UNet whose transformer blocks work on the latent's own "
        "token map (SD1.x, SD2.x, SDXL inpainting models)."
    )


def _fraction_key(fractions: Fractions) -> _FractionKey:
    missing = [name for name in REGIONS if name not in fractions]
    if missing:
        raise ValueError(f"cell fractions lack regions {missing}; expected keys {list(REGIONS)}")
    key = []
    for name in REGIONS:
        x0, y0, x1, y1 = (float(v) for v in fractions[name])
        key.append((x0, y0, x1, y1))
    return tuple(key)


def _on_grid(value: float) -> bool:
    return abs(value - round(value)) <= _EDGE_TOLERANCE * max(1.0, abs(value))


_EDGE_NAMES = ("left", "top", "right", "bottom")


def _check_latent_alignment(key: _FractionKey, height: int, width: int, factor: int) -> None:
    """Every region edge must sit on a token edge of this level, in latent units."""
    token_px = factor * VAE_FACTOR
    for name, box in zip(REGIONS, key, strict=True):
        for edge, frac, size in zip(_EDGE_NAMES, box, (width, height, width, height), strict=True):
            if not _on_grid(frac * size / factor):
                axis = "x" if edge in ("left", "right") else "y"
                raise ValueError(
                    f"The {edge} edge of the {REGION_LABELS[name]} cell ({axis} = "
                    f"{frac * size * VAE_FACTOR:g} px) falls inside a token of this UNet level "
                    f"({token_px} px per token; grid {width * VAE_FACTOR} x "
                    f"{height * VAE_FACTOR} px). " + _cell_size_advice(key, width, height)
                )


def _cell_size_advice(key: _FractionKey, width: int, height: int) -> str:
    x0, y0, x1, y1 = key[0]
    cell_w = (x1 - x0) * width * VAE_FACTOR
    cell_h = (y1 - y0) * height * VAE_FACTOR
    sizes = sorted(
        {
            f"{w} x {h}"
            for w, h in zip(_near_multiples(cell_w), _near_multiples(cell_h), strict=True)
        }
    )
    return (
        f"Cells are {cell_w:g} x {cell_h:g} px: set the grid's cell width and height to "
        f"multiples of {DEEPEST_TOKEN_PX} px (SD's deepest level), e.g. "
        f"{' or '.join(sizes)} px."
    )


def _near_multiples(size_px: float) -> tuple[int, int]:
    """The multiples of 64 px just below and above ``size_px`` (64 at least)."""
    low = max(DEEPEST_TOKEN_PX, math.floor(size_px / DEEPEST_TOKEN_PX) * DEEPEST_TOKEN_PX)
    high = max(low, math.ceil(size_px / DEEPEST_TOKEN_PX) * DEEPEST_TOKEN_PX)
    return low, high


@lru_cache(maxsize=256)
def _cached_region_tokens(key: _FractionKey, h: int, w: int, device: torch.device) -> RegionTokens:
    spans = [_token_span(name, key, h, w) for name in REGIONS]
    shapes = {(y1 - y0, x1 - x0) for x0, y0, x1, y1 in spans}
    if len(shapes) != 1:
        sizes = ", ".join(
            f"{REGION_LABELS[n]} {y1 - y0}x{x1 - x0}"
            for n, (x0, y0, x1, y1) in zip(REGIONS, spans, strict=True)
        )
        raise ValueError(f"regions must have equal shapes on the {h} x {w} token map: {sizes}")
    if 0 in next(iter(shapes)):
        raise ValueError(f"the regions cover no token on the {h} x {w} token map")
    a, a_prime, b, b_prime = (_span_indices(span, w) for span in spans)
    if int(torch.cat([a, a_prime, b, b_prime]).unique().numel()) != 4 * a.numel():
        raise ValueError(f"regions overlap on the {h} x {w} token map: {spans}")
    sac_edited = torch.zeros(h * w, dtype=torch.bool)
    sac_edited[torch.cat([a_prime, b_prime])] = True
    cam_keep = torch.ones(h * w, dtype=torch.bool)
    cam_keep[torch.cat([a, a_prime, b])] = False
    return RegionTokens(
        h=h,
        w=w,
        a=a.to(device),
        a_prime=a_prime.to(device),
        b=b.to(device),
        b_prime=b_prime.to(device),
        sac_untouched=(~sac_edited).nonzero().flatten().to(device),
        outside_a_prime=_complement(a_prime, h * w).to(device),
        outside_b_prime=_complement(b_prime, h * w).to(device),
        cam_rows=cam_keep.nonzero().flatten().to(device),
        cam_keep=cam_keep.to(device),
    )


def _complement(tokens: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Every token index in ``0..n_tokens-1`` that is not in ``tokens``, ascending."""
    keep = torch.ones(n_tokens, dtype=torch.bool)
    keep[tokens] = False
    return keep.nonzero().flatten()


def _token_span(name: str, key: _FractionKey, h: int, w: int) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` in whole tokens, or a ValueError naming map sizes that work."""
    box = key[REGIONS.index(name)]
    for edge, frac, size in zip(_EDGE_NAMES, box, (w, h, w, h), strict=True):
        if not _on_grid(frac * size):
            horizontal = edge in ("left", "right")
            axis_fracs = [b[i] for b in key for i in ((0, 2) if horizontal else (1, 3))]
            raise ValueError(
                f"The {edge} edge of the {REGION_LABELS[name]} cell falls inside a token "
                f"({frac * size:g} tokens) of this {h} x {w} (h x w) token map; a map "
                f"{_working_sizes(axis_fracs, size)} tokens {'wide' if horizontal else 'high'} "
                f"would work. In pixels: make the grid's cell width and height multiples of "
                f"{DEEPEST_TOKEN_PX} px (SD's deepest level)."
            )
    x0, y0, x1, y1 = box
    return round(x0 * w), round(y0 * h), round(x1 * w), round(y1 * h)


def _working_sizes(fracs: Sequence[float], size: int) -> str:
    """The nearest map sizes below and above ``size`` on which every edge is whole."""

    def works(n: int) -> bool:
        return all(_on_grid(f * n) for f in fracs)

    below = next((n for n in range(size - 1, 0, -1) if works(n)), None)
    above = next((n for n in range(size + 1, 64 * size + 2) if works(n)), None)
    found = [str(n) for n in (below, above) if n is not None]
    return " or ".join(found) if found else "of another size"


def _span_indices(span: tuple[int, int, int, int], w: int) -> torch.Tensor:
    x0, y0, x1, y1 = span
    ys = torch.arange(y0, y1)
    xs = torch.arange(x0, x1)
    return (ys[:, None] * w + xs[None, :]).flatten()
