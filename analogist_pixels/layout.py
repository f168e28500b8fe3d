"""The analogy grid: where A, A', B and B' (and further example pairs) sit, and how
each B was placed. Also the one place that states the pixel -> latent -> token rule.

A :class:`GridLayout` is produced by GridCompose and travels along node edges (ComfyUI
type ``ANALOGIST_LAYOUT``) to SACPatch, CAMPatch, MarkAndArrow and GridCrop. It is plain
data: no tensors, no ComfyUI objects, frozen so a node cannot change what another reads.

Two kinds of rectangles matter:

* ``cells``: the four quadrants of the grid (pair 1 and the query; further example pairs
  are in ``more_cells``). The attention edits (SAC, CAM) and the
  inpainting mask work on whole quadrants, so a quadrant boundary must fall on a token
  boundary at every UNet level.
* ``pastes``: where an input image's pixels lie inside its cell (the paper leaves a 2 px
  white border, so a 256 cell holds a 253 px image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analogist_attn.geometry import (
    REGIONS,
    CellGeometry,
    Rect,
    _pair_of,
    region_label,
    region_names,
)

# At most this many example pairs in one grid: each adds a row (a column when transposed)
# of cells, and the UNet's self-attention work grows with the square of the grid's token
# count: 4 pairs at cell 256 is a 512 x 1280 px grid, 2.5x the paper's tokens and ~6x its
# attention cost; more pairs make a grid few GPUs can sample and add little.
MAX_PAIRS = 4

# The ComfyUI type name of a GridLayout on node edges. Defined once here so every node
# (grid, attention, prompt) declares the same string and the sockets connect.
LAYOUT_TYPE = "ANALOGIST_LAYOUT"

# The paper's default puts A' to the right of A; "A aligned with B" swaps A' and B.
ARRANGEMENT_DEFAULT = "A' right of A (paper)"
ARRANGEMENT_ALIGNED = "A aligned with B"
ARRANGEMENTS: tuple[str, ...] = (ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED)

FITS: tuple[str, ...] = ("stretch", "letterbox", "crop")


@dataclass(frozen=True)
class Placement:
    """How one source image was fitted into its cell, so GridCrop can undo it.

    ``source_crop`` is the part of the source image that was used (the whole image unless
    ``fit == "crop"``); ``content`` is where those pixels landed in the grid (smaller than
    the paste rectangle for ``letterbox``).
    """

    source_width: int
    source_height: int
    fit: str
    source_crop: Rect
    content: Rect


@dataclass(frozen=True)
class BRegion:
    """One grid's region of interest in B's source pixels, and B's own pixels.

    ``bits``: ``np.packbits`` of the ``height x width`` boolean region, row-major.
    ``pixels``: B as RGB uint8 ``[height, width, 3]`` bytes (alpha composited on white, as
    the grid does), what Grid Crop puts back outside the region.
    """

    width: int
    height: int
    bits: bytes
    pixels: bytes

    def mask(self) -> np.ndarray:
        count = self.width * self.height
        flat = np.unpackbits(np.frombuffer(self.bits, np.uint8), count=count)
        return flat.reshape(self.height, self.width).astype(bool)

    def image(self) -> np.ndarray:
        return np.frombuffer(self.pixels, np.uint8).reshape(self.height, self.width, 3).copy()


@dataclass(frozen=True)
class GridLayout:
    """Geometry of one analogy grid (and of every grid in a batch: they share it)."""

    cell_width: int
    cell_height: int
    border: int
    arrangement: str
    fit: str
    # Indexed like REGIONS: (a, a_prime, b, b_prime).
    cells: tuple[Rect, Rect, Rect, Rect]
    pastes: tuple[Rect, Rect, Rect, Rect]
    # One per grid in the batch: how B (and so the expected B') was placed.
    b_placements: tuple[Placement, ...] = ()
    # One per grid in the batch: a thumbnail of its A, A' and B cells (each averaged down
    # to FINGERPRINT_SIDE^2 RGB uint8 pixels, in REGIONS order), so a node given a grid
    # and a layout can tell whether the layout belongs to that grid: those three cells
    # survive sampling (only B' is inpainted) and a VAE round trip changes them little.
    # Empty for a layout not made by GridCompose (then nothing can be checked).
    fingerprints: tuple[bytes, ...] = ()
    # One per grid when Grid Compose got a region of interest on B (``b_region``): the
    # region in B's source pixels and B's own pixels, for Grid Crop and CAM (see
    # ``region.py``). Empty: the whole B' may change (the paper).
    b_regions: tuple[BRegion, ...] = ()
    # Example pairs 2..K: ``(A_k cell, A'_k cell)`` and their paste rectangles; empty for
    # the paper's single pair.
    more_cells: tuple[tuple[Rect, Rect], ...] = ()
    more_pastes: tuple[tuple[Rect, Rect], ...] = ()

    @property
    def pairs(self) -> int:
        """K, the number of example pairs (rows of the grid before the query row)."""
        return 1 + len(self.more_cells)

    @property
    def grid_width(self) -> int:
        across = 2 if self.arrangement == ARRANGEMENT_DEFAULT else self.pairs + 1
        return across * self.cell_width

    @property
    def grid_height(self) -> int:
        down = self.pairs + 1 if self.arrangement == ARRANGEMENT_DEFAULT else 2
        return down * self.cell_height

    @property
    def region_names(self) -> tuple[str, ...]:
        """Every region: ``a, a_prime, a2, a2_prime, ..., b, b_prime``."""
        return region_names(self.pairs)

    def label(self, region: str) -> str:
        """The region's name on the grid: A, A', B, B' (one pair) or A1, A1', A2, ..."""
        return region_label(region, self.pairs)

    def cell(self, region: str) -> Rect:
        return self._lookup(region, self.cells, self.more_cells)

    def paste(self, region: str) -> Rect:
        return self._lookup(region, self.pastes, self.more_pastes)

    def _lookup(
        self, region: str, first: tuple[Rect, ...], more: tuple[tuple[Rect, Rect], ...]
    ) -> Rect:
        if region in REGIONS:
            return first[REGIONS.index(region)]
        try:
            k, prime = _pair_of(region)
        except ValueError:
            k, prime = 0, False
        if k == 1:
            return first[int(prime)]
        if 2 <= k <= self.pairs:
            return more[k - 2][int(prime)]
        raise ValueError(
            f"no region {region!r} in this {self.pairs}-pair layout; regions: "
            f"{', '.join(self.region_names)}"
        )

    @property
    def geometry(self) -> CellGeometry:
        """Every cell in whole pixels, for the attention edits (see ``CellGeometry``)."""
        names = self.region_names
        return CellGeometry(
            grid_width=self.grid_width,
            grid_height=self.grid_height,
            names=names,
            labels=tuple(self.label(name) for name in names),
            rects=tuple(self.cell(name) for name in names),
        )


# Side of each cell's thumbnail in a fingerprint: coarse enough that a VAE round trip
# (8x8 px latent pixels) barely moves it, fine enough to tell two pictures apart.
FINGERPRINT_SIDE = 8


def check_layout(layout: object, name: str = "layout") -> GridLayout:
    """ComfyUI checks socket types by name only: make sure a layout really is one."""
    if not isinstance(layout, GridLayout):
        raise TypeError(
            f"{name}: expected the {LAYOUT_TYPE} output of Analogist Grid Compose, got "
            f"{type(layout).__name__} ({str(layout)[:60]!r}). Connect Grid Compose's layout output."
        )
    return layout


def inner_size(cell: int, border: int) -> int:
    """Side of the image pasted into a cell: ``c - 1.5 p`` (253 for the paper's 256 / 2)."""
    return cell - (3 * border) // 2


def make_layout(
    cell_width: int = 256,
    cell_height: int = 256,
    border: int = 2,
    arrangement: str = ARRANGEMENT_DEFAULT,
    fit: str = "stretch",
    b_placements: tuple[Placement, ...] = (),
    fingerprints: tuple[bytes, ...] = (),
    pairs: int = 1,
) -> GridLayout:
    """The paper's grid geometry for the given cell size, border and arrangement.

    One row per example pair (``A_k | A'_k``) and the query row ``B | B'`` last; "A
    aligned with B" is the transpose (a column per pair). With one pair the cells are the
    four quadrants. Images are pasted at ``p`` in the first row/column and at
    ``i c + p - 1`` in the others (the paper's offsets), ``c - 1.5 p`` pixels wide.
    """
    if arrangement not in ARRANGEMENTS:
        raise ValueError(f"arrangement {arrangement!r} is not one of {ARRANGEMENTS}")
    if fit not in FITS:
        raise ValueError(f"fit {fit!r} is not one of {FITS}")
    check_pairs(pairs)
    cw, ch, p = cell_width, cell_height, border
    iw, ih = inner_size(cw, p), inner_size(ch, p)

    def spot(side: int, row: int) -> tuple[int, int]:
        """(column, row) of side 0 (A_k / B) or 1 (A'_k / B') of grid row ``row``."""
        return (side, row) if arrangement == ARRANGEMENT_DEFAULT else (row, side)

    def offset(index: int, cell: int) -> int:
        return p if index == 0 else index * cell + p - 1

    def cell_at(side: int, row: int) -> Rect:
        col, row_ = spot(side, row)
        return Rect(col * cw, row_ * ch, cw, ch)

    def paste_at(side: int, row: int) -> Rect:
        col, row_ = spot(side, row)
        return Rect(offset(col, cw), offset(row_, ch), iw, ih)

    # Indexed like REGIONS: A, A' (row 0), B, B' (the last row).
    spots = ((0, 0), (1, 0), (0, pairs), (1, pairs))
    cells = tuple(cell_at(*s) for s in spots)
    pastes = tuple(paste_at(*s) for s in spots)
    more_cells = tuple((cell_at(0, r), cell_at(1, r)) for r in range(1, pairs))
    more_pastes = tuple((paste_at(0, r), paste_at(1, r)) for r in range(1, pairs))
    return GridLayout(
        cell_width=cw,
        cell_height=ch,
        border=p,
        arrangement=arrangement,
        fit=fit,
        cells=cells,  # type: ignore[arg-type]
        pastes=pastes,  # type: ignore[arg-type]
        b_placements=tuple(b_placements),
        fingerprints=tuple(fingerprints),
        more_cells=more_cells,
        more_pastes=more_pastes,
    )


def check_pairs(pairs: int) -> None:
    """1 to MAX_PAIRS example pairs, with the reason for the limit."""
    if not isinstance(pairs, int) or isinstance(pairs, bool) or not 1 <= pairs <= MAX_PAIRS:
        raise ValueError(
            f"{pairs!r} example pairs: use 1 to {MAX_PAIRS}. Each pair adds a row of cells to "
            f"the grid and the UNet's self-attention cost grows with the square of the grid's "
            f"size ({MAX_PAIRS} pairs at cell 256 is already a 512 x {256 * (MAX_PAIRS + 1)} px "
            "grid, about 6x the paper's attention work and memory). Keep the examples "
            "that show the change most clearly."
        )
