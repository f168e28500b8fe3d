"""Is the latent a sampler starts from the grid a layout describes? (issue 23)

The inpainting mask cannot tell a one-pair layout of one arrangement from the other's:
both put B' in the same corner ("A' right of A" has B below A; "A aligned with B" has B
right of A, where the other has A'). The cells' pictures can, and the sampler sees them:
Grid Compose's ``grid`` has B's whole cell copied over B' (the sampler starts from a noisy
B), and InpaintModelConditioning (or VAE Encode) turns that grid into the latent the
sampler starts from. Any VAE encoder is a convolution network with shared normalisation,
so two equal cells at whole-latent-pixel offsets encode (away from their edges) to equal
latents, whatever the weights: in that latent the B' cell matches the B cell, and no
other. A layout whose B cell is not the one that matches B' belongs to another grid.

No VAE is needed and no model kind assumed (SD, SDXL, Flux latents alike). When nothing
can be told (an empty latent for text-to-image, a B' greyed by VAE Encode (for Inpainting),
A' and B the same picture, a B' no more a copy of one cell than of another) nothing is
refused: a wrong refusal would stop a right workflow.
"""

from __future__ import annotations

import torch

from .layout import GridLayout

# The B' cell must match the layout's B at least this much better than any other cell to
# count as "matches"; the copy matches ~10x better than a different picture (random or
# real VAE weights), so a factor 2 leaves margin for VAE edge effects and similar cells.
CLEAR_FACTOR = 2.0
# ...and nearer to it than this fraction of that cell's own distance to the layout's B:
# a copy is (away from the edges) the same latent; a B' that is merely more like one cell
# than another (greyed, say, while A' is a pale sketch) is not a copy of anything.
COPY_FRACTION = 0.35
# A B' whose latent varies less than this fraction of the most detailed cell's was blanked
# before encoding (VAE Encode (for Inpainting) greys it) or the latent is empty.
BLANK_FRACTION = 0.1
# Latent pixels left out along each cell edge (at least 1, an eighth of the cell for large
# cells): there a VAE's receptive field sees the neighbouring cells, which differ between
# B and B'.
EDGE_FRACTION = 8


def _cell(latent: torch.Tensor, layout: GridLayout, name: str) -> torch.Tensor | None:
    """``[batch, channels, h, w]``: the latent pixels inside the layout's cell, less a
    margin along its edges."""
    height, width = latent.shape[-2:]
    rect = layout.cell(name)
    sx, sy = width / layout.grid_width, height / layout.grid_height
    x0, x1 = round(rect.x * sx), round(rect.right * sx)
    y0, y1 = round(rect.y * sy), round(rect.bottom * sy)
    edge_x, edge_y = max(1, (x1 - x0) // EDGE_FRACTION), max(1, (y1 - y0) // EDGE_FRACTION)
    x0, x1, y0, y1 = x0 + edge_x, x1 - edge_x, y0 + edge_y, y1 - edge_y
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return latent[:, :, y0:y1, x0:x1]


def start_latent_mismatch(layout: GridLayout, latent: torch.Tensor) -> str | None:
    """``None`` when the latent ([batch, channels, height, width], the grid's proportions)
    agrees with the layout, or cannot tell; else what is wrong, in the layout's words.

    Refused only when B' is clearly a copy of another cell: nearer to it than
    ``CLEAR_FACTOR`` times to the layout's B, and nearer to it than ``COPY_FRACTION`` of
    that cell's own distance to the layout's B. A B' with (nearly) no detail of its own,
    greyed or blanked before encoding (VAE Encode (for Inpainting)), is not compared."""
    latent = latent.detach().float()
    b_prime = _cell(latent, layout, "b_prime")
    if b_prime is None:
        return None
    names = [name for name in layout.region_names if name != "b_prime"]
    cells: dict[str, torch.Tensor] = {}
    for name in names:
        cell = _cell(latent, layout, name)
        if cell is None or cell.shape != b_prime.shape:
            return None
        cells[name] = cell
    for index in range(latent.shape[0]):
        mine = b_prime[index]
        detail = [float(cells[n][index].std(dim=(1, 2)).mean()) for n in names]
        if not float(mine.std(dim=(1, 2)).mean()) > BLANK_FRACTION * max(detail, default=0.0):
            continue  # an empty latent, or a B' greyed before encoding: nothing to compare
        near = {n: float((cells[n][index] - mine).abs().mean()) for n in names}
        best = min(names, key=near.__getitem__)
        if best == "b" or near[best] * CLEAR_FACTOR >= near["b"]:
            continue  # B' matches the layout's B, or no cell clearly
        apart = float((cells[best][index] - cells["b"][index]).abs().mean())
        if near[best] >= COPY_FRACTION * apart:
            continue  # B' is not a copy of that cell either: cannot tell
        return (
            f"in the latent the sampler starts from (grid {index}), B' is a copy of the cell "
            f"this layout calls {layout.label(best)}, not of its {layout.label('b')}: the grid "
            f"was composed with another arrangement or other example pairs than this "
            f'layout\'s ("{layout.arrangement}", {layout.pairs} example pair(s))'
        )
    return None
