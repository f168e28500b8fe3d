"""Does an inpainting mask at latent resolution belong to a grid layout? (issue 23)

Grid Compose's mask is 1 on the B' cell and 0 elsewhere; ComfyUI resizes it to the latent
(bilinear, rounded) for the inpainting model's concat input. SAC and CAM never see pixels,
only the layout and the latent, so this is how they tell a layout that belongs to another
Grid Compose (another arrangement, another number of example pairs, another cell size)
from the one whose grid is sampled: its B' cell must be where the sampled mask is.
"""

from __future__ import annotations

import torch

from .layout import GridLayout


def b_prime_cell_latent(
    layout: GridLayout, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inside, sure)``: [height, width] bools: latent pixels whose centre lies in the
    layout's B' cell, and those more than one latent pixel from its edge (where a resized
    mask must agree whatever the rounding)."""
    cell = layout.cells[3]
    sx, sy = layout.grid_width / width, layout.grid_height / height
    xs = (torch.arange(width, dtype=torch.float64) + 0.5) * sx
    ys = (torch.arange(height, dtype=torch.float64) + 0.5) * sy
    inside_x = (xs >= cell.x) & (xs < cell.right)
    inside_y = (ys >= cell.y) & (ys < cell.bottom)
    edge_x = torch.minimum((xs - cell.x).abs(), (xs - cell.right).abs()) <= sx
    edge_y = torch.minimum((ys - cell.y).abs(), (ys - cell.bottom).abs()) <= sy
    inside = inside_y[:, None] & inside_x[None, :]
    near_edge = (edge_y[:, None] & (inside_x | edge_x)[None, :]) | (
        edge_x[None, :] & (inside_y | edge_y)[:, None]
    )
    return inside, ~near_edge


def mask_mismatch(layout: GridLayout, mask: torch.Tensor) -> str | None:
    """``None`` when every latent mask in ``mask`` ([batch, height, width], 1 = inpaint) is
    the layout's B' cell (up to one latent pixel at its edge), or, for a layout with a
    region of interest on B, lies inside that cell; else what differs."""
    mask = mask.detach().to("cpu", torch.float32)
    height, width = mask.shape[-2:]
    inside, sure = b_prime_cell_latent(layout, height, width)
    # With a region of interest on B (Grid Compose's b_region) the mask is that region,
    # somewhere inside the B' cell: it must not reach outside the cell, nor be empty.
    has_region = bool(getattr(layout, "b_regions", ()))
    for index, one in enumerate(mask.reshape(-1, height, width)):
        painted = one > 0.5
        if has_region:
            wrong = (painted & ~inside & sure) | (~painted.any() & inside)
        else:
            wrong = (painted != inside) & sure
        if bool(wrong.any()):
            return (
                f"the sampled inpainting mask (latent {width}x{height}, entry {index}) "
                f"{_describe(painted, layout.grid_width / width, layout.grid_height / height)}, "
                f"but this layout's B' cell is {_rect(layout)}"
            )
    return None


def _rect(layout: GridLayout) -> str:
    cell = layout.cells[3]
    return (
        f"x {cell.x}..{cell.right}, y {cell.y}..{cell.bottom} px of a "
        f"{layout.grid_width}x{layout.grid_height} grid ({layout.pairs} example pair(s), "
        f"{layout.arrangement!r})"
    )


def _describe(painted: torch.Tensor, sx: float, sy: float) -> str:
    if not bool(painted.any()):
        return "is empty"
    rows = painted.any(dim=1).nonzero().flatten()
    cols = painted.any(dim=0).nonzero().flatten()
    x0, x1 = int(cols[0]) * sx, (int(cols[-1]) + 1) * sx
    y0, y1 = int(rows[0]) * sy, (int(rows[-1]) + 1) * sy
    return f"covers x {x0:.0f}..{x1:.0f}, y {y0:.0f}..{y1:.0f} px"
