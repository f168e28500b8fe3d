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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

# --- the integer geometry rule, stated once -------------------------------------------
# SD's VAE maps 8 x 8 px to one latent pixel; the UNet then halves the latent at each of
# its three downsamplings (SD1.x, SD2.x, SDXL), so a token of the deepest level covers
# 8 x 8 = 64 px. A cell edge on a multiple of 64 px is therefore a token edge at every
# level: that is why cells are multiples of CELL_MULTIPLE, and everything below (cells in
# px -> latent -> token rectangles at a downsample factor) is exact integer arithmetic.
PX_PER_LATENT = 8
DEEPEST_DOWNSAMPLE = 8
CELL_MULTIPLE = PX_PER_LATENT * DEEPEST_DOWNSAMPLE

# Region names in the paper's words, in the order the tuples below use.
REGIONS: tuple[str, ...] = ("a", "a_prime", "b", "b_prime")
REGION_LABELS: dict[str, str] = {"a": "A", "a_prime": "A'", "b": "B", "b_prime": "B'"}


@dataclass(frozen=True)
class Rect:
    """An axis-aligned pixel rectangle: left ``x``, top ``y``, ``width``, ``height``."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height


def scale_rect(rect: Rect, num_x: int, den_x: int, num_y: int, den_y: int) -> Rect | None:
    """``rect`` scaled by ``num/den`` per axis when every edge lands on a whole unit, else None."""
    edges = (rect.x * num_x, rect.y * num_y, rect.right * num_x, rect.bottom * num_y)
    dens = (den_x, den_y, den_x, den_y)
    if any(edge % den for edge, den in zip(edges, dens, strict=True)):
        return None
    x0, y0, x1, y1 = (edge // den for edge, den in zip(edges, dens, strict=True))
    return Rect(x0, y0, x1 - x0, y1 - y0)


@dataclass(frozen=True)
class CellGeometry:
    """The cells of one grid in whole pixels, in region order (every example pair, then
    B, B'): what the attention edits need, hashable so token indices can be cached on it.

    ``names``: ``a, a_prime`` (pair 1), ``a2, a2_prime``, ..., ``b, b_prime``.
    """

    grid_width: int
    grid_height: int
    names: tuple[str, ...]
    labels: tuple[str, ...]
    rects: tuple[Rect, ...]

    @property
    def pairs(self) -> int:
        return (len(self.rects) - 2) // 2

    def on_map(self, h: int, w: int) -> tuple[Rect, ...] | None:
        """Every cell in tokens of an ``h x w`` map covering the whole grid, or None when an
        edge falls inside a token."""
        rects = tuple(scale_rect(r, w, self.grid_width, h, self.grid_height) for r in self.rects)
        return None if any(r is None for r in rects) else rects  # type: ignore[return-value]

    def misaligned_edge(self, h: int, w: int, factor: int = 1) -> tuple[str, str, int] | None:
        """``(label, edge, px)`` of the first cell edge inside a token of an ``h x w`` map
        (``factor``: tokens of ``factor x factor`` units of that map, e.g. a UNet level's
        downsample of the latent)."""
        for label, rect in zip(self.labels, self.rects, strict=True):
            for edge, px, units, size in (
                ("left", rect.x, w, self.grid_width),
                ("top", rect.y, h, self.grid_height),
                ("right", rect.right, w, self.grid_width),
                ("bottom", rect.bottom, h, self.grid_height),
            ):
                if (px * units) % (size * factor):
                    return label, edge, px
        return None


def latent_fits_grid(latent_w: int, latent_h: int, grid_w: int, grid_h: int) -> bool:
    """Whether a sampled latent has the grid's proportions (a grid size rounds down to
    whole latent pixels when encoded: one latent pixel of slack)."""
    return abs(latent_w / latent_h - grid_w / grid_h) <= PX_PER_LATENT / min(grid_w, grid_h)


def region_names(pairs: int) -> tuple[str, ...]:
    """``a, a_prime, a2, a2_prime, ..., b, b_prime``: pair 1 keeps the paper's names."""
    names = ["a", "a_prime"]
    for k in range(2, pairs + 1):
        names += [f"a{k}", f"a{k}_prime"]
    return tuple(names) + ("b", "b_prime")


def region_label(name: str, pairs: int) -> str:
    """ "A", "A'", "B", "B'" for one pair (the paper's); "A1", "A1'", "A2", ... for more."""
    if name in ("b", "b_prime") or pairs == 1:
        if name in REGION_LABELS:
            return REGION_LABELS[name]
    k, prime = _pair_of(name)
    return f"A{k}" + ("'" if prime else "")


def _pair_of(name: str) -> tuple[int, bool]:
    """``a`` -> (1, False), ``a2_prime`` -> (2, True); ValueError for anything else."""
    base, prime = (name[: -len("_prime")], True) if name.endswith("_prime") else (name, False)
    if base == "a":
        return 1, prime
    if base.startswith("a") and base[1:].isdigit() and int(base[1:]) >= 1:
        return int(base[1:]), prime
    raise ValueError(f"no region named {name!r}")


VAE_FACTOR = PX_PER_LATENT
_MAX_DOWNSAMPLE_POWER = 7


@dataclass(frozen=True, eq=False)
class RegionTokens:
    """Token indices of the grid's regions on one ``h x w`` map (cached, read-only).

    ``a``/``a_prime`` are example pair 1; ``examples`` lists every pair ``(A_k, A'_k)``
    (pair 1 first). ``sac_untouched`` lists the tokens whose self-attention rows SAC
    leaves as they are (everything outside every A'_k and B'); ``outside_a_prime`` /
    ``outside_b_prime`` list every token but the A'_k / B', the keys whose logits the rows
    of B' / A'_k keep. CAM silences the text for every A_k, A'_k and B; ``cam_rows``
    lists the tokens it still computes (B', plus any token outside the regions, which the
    paper's grids never have) and ``cam_keep`` marks them.
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
    examples: tuple[tuple[torch.Tensor, torch.Tensor], ...] = ()
    # Every A_k and every A'_k, pair after pair (matching positions): the keys B' rows
    # clone from and the keys they clone into.
    all_a: torch.Tensor | None = None
    all_a_prime: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        return self.h * self.w

    @property
    def pairs(self) -> int:
        return len(self.examples)

    @property
    def region_size(self) -> int:
        """Tokens per region (all have the same shape)."""
        return int(self.a.numel())

    def region(self, name: str) -> torch.Tensor:
        fixed = {"a": self.a, "a_prime": self.a_prime, "b": self.b, "b_prime": self.b_prime}
        if name in fixed:
            return fixed[name]
        base, prime = (name[:-6], 1) if name.endswith("_prime") else (name, 0)
        if base.startswith("a") and base[1:].isdigit() and 1 <= int(base[1:]) <= self.pairs:
            return self.examples[int(base[1:]) - 1][prime]
        raise ValueError(f"no region {name!r} among {self.pairs} example pairs")


def region_tokens(
    cells: CellGeometry, h: int, w: int, device: torch.device | str | None = None
) -> RegionTokens:
    """Token indices of every region on an ``h x w`` token map covering the whole grid.

    ``cells`` is a layout's ``geometry``. Raises ``ValueError`` when a region edge falls
    inside a token or the regions differ in shape, since the position-to-position pairing
    of SAC would then be meaningless.
    """
    return _cached_geometry_tokens(_geometry(cells), int(h), int(w), torch.device(device or "cpu"))


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
    cells: CellGeometry,
    original_shape: Sequence[int],
    n_tokens: int,
    device: torch.device | str | None = None,
) -> RegionTokens:
    """Region tokens for one attention call (what a patch calls; cached).

    Integer geometry: the cells (px) map onto the latent (``PX_PER_LATENT`` px per latent
    pixel when the grid is sampled at its own size; any latent of the grid's proportions
    works when every cell edge lands on a whole latent pixel), then onto this block's map
    (downsample ``f``). Every edge must fall on a token edge of this level; the check is
    in latent units, where the error can also name pixel sizes.
    """
    height, width = _latent_hw(original_shape)
    _, _, factor = _token_map(height, width, int(n_tokens))
    return regions_at_factor(cells, height, width, factor, device)


UNET_TOKEN = "a token of this UNet level"


def regions_at_factor(
    cells: CellGeometry,
    latent_h: int,
    latent_w: int,
    factor: int,
    device: torch.device | str | None = None,
    token: str = UNET_TOKEN,
) -> RegionTokens:
    """Region tokens on the map of ``factor x factor`` latent pixels per token (cached).

    The one route from pixels to tokens, for every model: cells in px -> latent pixels
    (``PX_PER_LATENT`` px each when the grid is sampled at its own size; any latent of the
    grid's proportions works when every edge lands on a whole latent pixel) -> tokens of
    ``factor`` latent pixels (a UNet level's downsample; 2 for a DiT's 2 x 2 patches). The
    map is ``ceil(latent / factor)``. Every edge must fall on a token edge, else a
    ``ValueError`` names the edge, the cell and sizes that work (``token`` says what a
    token is there). Token indices start at 0; a DiT adds its text offset.
    """
    return _cached_factor_regions(
        _geometry(cells),
        int(latent_h),
        int(latent_w),
        int(factor),
        torch.device(device or "cpu"),
        token,
    )


@lru_cache(maxsize=256)
def _cached_factor_regions(
    geometry: CellGeometry, height: int, width: int, factor: int, device: torch.device, token: str
) -> RegionTokens:
    h, w = math.ceil(height / factor), math.ceil(width / factor)
    # Cells in px -> latent pixels -> tokens of this level, each step exact or an error
    # (checked in latent units: edges must be multiples of ``factor``).
    misaligned = geometry.misaligned_edge(height, width, factor)
    if misaligned is not None:
        label, edge, px = misaligned
        scale = width * PX_PER_LATENT / geometry.grid_width  # sampled px per grid px
        axis = "x" if edge in ("left", "right") else "y"
        raise ValueError(
            f"The {edge} edge of the {label} cell ({axis} = {px * scale:g} px) falls inside "
            f"{token} ({factor * PX_PER_LATENT} px per token; grid "
            f"{width * PX_PER_LATENT} x {height * PX_PER_LATENT} px). "
            + _cell_size_advice(geometry.rects[0], scale)
        )
    return _cached_geometry_tokens(geometry, h, w, device)


def _geometry(cells: CellGeometry) -> CellGeometry:
    if not isinstance(cells, CellGeometry):
        raise TypeError(
            f"expected the layout's CellGeometry (GridLayout.geometry), got {type(cells).__name__}"
        )
    return cells


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


def _cell_size_advice(cell: Rect, scale: float) -> str:
    cell_w, cell_h = cell.width * scale, cell.height * scale
    sizes = sorted(
        {
            f"{w} x {h}"
            for w, h in zip(_near_multiples(cell_w), _near_multiples(cell_h), strict=True)
        }
    )
    return (
        f"Cells are {cell_w:g} x {cell_h:g} px: set the grid's cell width and height to "
        f"multiples of {CELL_MULTIPLE} px (SD's deepest level), e.g. "
        f"{' or '.join(sizes)} px."
    )


def _near_multiples(size_px: float) -> tuple[int, int]:
    """The multiples of 64 px just below and above ``size_px`` (64 at least)."""
    low = max(CELL_MULTIPLE, math.floor(size_px / CELL_MULTIPLE) * CELL_MULTIPLE)
    high = max(low, math.ceil(size_px / CELL_MULTIPLE) * CELL_MULTIPLE)
    return low, high


Span = tuple[int, int, int, int]  # (x0, y0, x1, y1) in whole tokens


@lru_cache(maxsize=256)
def _cached_geometry_tokens(
    geometry: CellGeometry, h: int, w: int, device: torch.device
) -> RegionTokens:
    rects = geometry.on_map(h, w)
    if rects is None:
        label, edge, px = geometry.misaligned_edge(h, w)  # type: ignore[misc]
        raise ValueError(
            f"The {edge} edge of the {label} cell ({px} px of a {geometry.grid_width} x "
            f"{geometry.grid_height} px grid) falls inside a token of this {h} x {w} (h x w) "
            f"token map. In pixels: make the grid's cell width and height multiples of "
            f"{CELL_MULTIPLE} px (SD's deepest level)."
        )
    spans = [(r.x, r.y, r.right, r.bottom) for r in rects]
    return _build(spans, geometry.labels, h, w, device)


def _build(
    spans: Sequence[Span], labels: Sequence[str], h: int, w: int, device: torch.device
) -> RegionTokens:
    """Index tensors from token spans ordered ``A_1, A'_1, ..., A_K, A'_K, B, B'``."""
    shapes = {(y1 - y0, x1 - x0) for x0, y0, x1, y1 in spans}
    if len(shapes) != 1:
        sizes = ", ".join(
            f"{label} {y1 - y0}x{x1 - x0}"
            for label, (x0, y0, x1, y1) in zip(labels, spans, strict=True)
        )
        raise ValueError(f"regions must have equal shapes on the {h} x {w} token map: {sizes}")
    if 0 in next(iter(shapes)):
        raise ValueError(f"the regions cover no token on the {h} x {w} token map")
    indices = [_span_indices(span, w) for span in spans]
    if int(torch.cat(indices).unique().numel()) != len(indices) * indices[0].numel():
        raise ValueError(f"regions overlap on the {h} x {w} token map: {list(spans)}")
    *example_tokens, b, b_prime = indices
    examples = tuple(
        (example_tokens[i], example_tokens[i + 1]) for i in range(0, len(example_tokens), 2)
    )
    a_primes = torch.cat([pair[1] for pair in examples])
    sac_edited = torch.zeros(h * w, dtype=torch.bool)
    sac_edited[torch.cat([a_primes, b_prime])] = True
    cam_keep = torch.ones(h * w, dtype=torch.bool)
    cam_keep[torch.cat(example_tokens + [b])] = False
    return RegionTokens(
        h=h,
        w=w,
        a=examples[0][0].to(device),
        a_prime=examples[0][1].to(device),
        b=b.to(device),
        b_prime=b_prime.to(device),
        sac_untouched=(~sac_edited).nonzero().flatten().to(device),
        outside_a_prime=_complement(a_primes, h * w).to(device),
        outside_b_prime=_complement(b_prime, h * w).to(device),
        cam_rows=cam_keep.nonzero().flatten().to(device),
        cam_keep=cam_keep.to(device),
        examples=tuple((a.to(device), a_prime.to(device)) for a, a_prime in examples),
        all_a=torch.cat([pair[0] for pair in examples]).to(device),
        all_a_prime=a_primes.to(device),
    )


def _complement(tokens: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Every token index in ``0..n_tokens-1`` that is not in ``tokens``, ascending."""
    keep = torch.ones(n_tokens, dtype=torch.bool)
    keep[tokens] = False
    return keep.nonzero().flatten()


def _span_indices(span: tuple[int, int, int, int], w: int) -> torch.Tensor:
    x0, y0, x1, y1 = span
    ys = torch.arange(y0, y1)
    xs = torch.arange(x0, x1)
    return (ys[:, None] * w + xs[None, :]).flatten()


# --- CAM: text only in the region --------------------------------------------------------


class RegionTokensInside:
    """Which B' tokens lie in the region, per grid, at any token-map size.

    Built once per layout (the regions at latent resolution, ``[G, H/8, W/8]``); a
    block's ``h x w`` map with factor ``f`` takes a token as inside when any latent pixel
    of its ``f x f`` block is (max pooling over each token's latent pixels).
    """

    def __init__(self, latent: np.ndarray):
        """``latent``: boolean ``[G, H/8, W/8]``, each grid's region in B' at latent
        resolution (``analogist_pixels.region.latent_regions``)."""
        stacked = np.asarray(latent, dtype=bool)
        if stacked.ndim != 3 or not stacked.any():
            raise ValueError("expected a non-empty region mask shaped [grids, height, width]")
        # Grids sharing one region (one mask, one B size) need no per-entry rows.
        self.shared = all(np.array_equal(stacked[0], one) for one in stacked[1:])
        self.latent = torch.from_numpy(stacked[:1] if self.shared else stacked)
        self._cache: dict[tuple[int, int, str], torch.Tensor] = {}

    @property
    def grids(self) -> int:
        return int(self.latent.shape[0])

    def inside(self, h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[G, h * w]`` booleans: token inside the region (only B' tokens can be)."""
        key = (h, w, str(device))
        if key not in self._cache:
            # Bins [floor(i H / h), ceil((i + 1) H / h)): exactly each token's latent pixels
            # when h divides the latent (always, for grids of 64 px cells and SD's levels),
            # and still "any pixel it covers" for a grid sampled at another size.
            pooled = F.adaptive_max_pool2d(self.latent[:, None].float(), (h, w))[:, 0]
            self._cache[key] = (pooled > 0).reshape(pooled.shape[0], h * w).to(device)
        return self._cache[key]

    def keep_rows(
        self, cam_keep: torch.Tensor, b_prime: torch.Tensor, h: int, w: int, batch: int, chunks: int
    ) -> torch.Tensor:
        """``[batch or 1, h*w]``: the rows CAM keeps with text only in the region.

        ``cam_keep``/``b_prime`` are the plain CAM's kept rows and B''s tokens
        (:class:`RegionTokens`); ``chunks`` is the number of CFG chunks in the batch, so
        entry ``e`` is latent ``e mod (batch / chunks)``, of grid ``latent mod G``.
        """
        inside = self.inside(h, w, cam_keep.device)
        is_b_prime = torch.zeros_like(cam_keep)
        is_b_prime[b_prime] = True
        keep = cam_keep[None] & ~(is_b_prime[None] & ~inside)
        if self.shared:
            return keep
        latents = batch // max(1, chunks)
        if latents <= 0 or latents % self.grids:
            raise ValueError(
                f"Analogist CAM: a batch of {latents} latents per pass cannot be matched to the "
                f"layout's {self.grids} grids (each with its own region): sample a multiple of "
                f"{self.grids} (k samples of each grid, as Repeat Latent Batch makes them)."
            )
        grid_of = (torch.arange(batch, device=keep.device) % latents) % self.grids
        return keep[grid_of]
