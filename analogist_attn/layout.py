"""The 2x2 analogy grid: where A, A', B and B' sit, and how each B was placed.

A :class:`GridLayout` is produced by GridCompose and travels along node edges (ComfyUI
type ``ANALOGIST_LAYOUT``) to SACPatch, CAMPatch, MarkAndArrow and GridCrop. It is plain
data: no tensors, no ComfyUI objects, frozen so a node cannot change what another reads.

Two kinds of rectangles matter:

* ``cells``: the four quadrants of the grid. The attention edits (SAC, CAM) and the
  inpainting mask work on whole quadrants, so a quadrant boundary must fall on a token
  boundary at every UNet level.
* ``pastes``: where an input image's pixels lie inside its cell (the paper leaves a 2 px
  white border, so a 256 cell holds a 253 px image).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .region import BRegion

# The ComfyUI type name of a GridLayout on node edges. Defined once here so every node
# (grid, attention, prompt) declares the same string and the sockets connect.
LAYOUT_TYPE = "ANALOGIST_LAYOUT"

# Region names in the paper's words, in the order the tuples below use.
REGIONS: tuple[str, ...] = ("a", "a_prime", "b", "b_prime")
REGION_LABELS: dict[str, str] = {"a": "A", "a_prime": "A'", "b": "B", "b_prime": "B'"}

# The paper's default puts A' to the right of A; "A aligned with B" swaps A' and B.
ARRANGEMENT_DEFAULT = "A' right of A (paper)"
ARRANGEMENT_ALIGNED = "A aligned with B"
ARRANGEMENTS: tuple[str, ...] = (ARRANGEMENT_DEFAULT, ARRANGEMENT_ALIGNED)

FITS: tuple[str, ...] = ("stretch", "letterbox", "crop")


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

    def fractions(self, grid_width: int, grid_height: int) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` as fractions of the grid size."""
        return (
            self.x / grid_width,
            self.y / grid_height,
            self.right / grid_width,
            self.bottom / grid_height,
        )


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

    @property
    def grid_width(self) -> int:
        return 2 * self.cell_width

    @property
    def grid_height(self) -> int:
        return 2 * self.cell_height

    def cell(self, region: str) -> Rect:
        return self.cells[REGIONS.index(region)]

    def paste(self, region: str) -> Rect:
        return self.pastes[REGIONS.index(region)]

    def cell_fractions(self) -> dict[str, tuple[float, float, float, float]]:
        """Each region's cell as ``(x0, y0, x1, y1)`` fractions of the grid."""
        return {
            name: rect.fractions(self.grid_width, self.grid_height)
            for name, rect in zip(REGIONS, self.cells, strict=True)
        }


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
) -> GridLayout:
    """The paper's grid geometry for the given cell size, border and arrangement.

    Cells are the four quadrants; images are pasted at ``(p, p)`` in the top-left cell and
    at ``c + p - 1`` in the others (the paper's offsets), ``c - 1.5 p`` pixels wide.
    """
    if arrangement not in ARRANGEMENTS:
        raise ValueError(f"arrangement {arrangement!r} is not one of {ARRANGEMENTS}")
    if fit not in FITS:
        raise ValueError(f"fit {fit!r} is not one of {FITS}")
    cw, ch, p = cell_width, cell_height, border
    iw, ih = inner_size(cw, p), inner_size(ch, p)
    # Quadrant (column, row) of each region, indexed like REGIONS.
    if arrangement == ARRANGEMENT_DEFAULT:
        spots = ((0, 0), (1, 0), (0, 1), (1, 1))
    else:
        spots = ((0, 0), (0, 1), (1, 0), (1, 1))
    cells = tuple(Rect(col * cw, row * ch, cw, ch) for col, row in spots)
    pastes = tuple(
        Rect(p if col == 0 else cw + p - 1, p if row == 0 else ch + p - 1, iw, ih)
        for col, row in spots
    )
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
    )
