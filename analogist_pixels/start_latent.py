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
can be told (an empty latent for text-to-image, a B' that matches no cell because it was
greyed by VAE Encode (for Inpainting), A' and B the same picture) nothing is refused.
"""

from __future__ import annotations

import torch

from .layout import GridLayout

# The B' cell must match the layout's B at least this much better than any other cell to
# count as "matches"; the copy matches ~10x better than a different picture (random or
# real VAE weights), so a factor 2 leaves margin for VAE edge effects and similar cells.
CLEAR_FACTOR = 2.0
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
    agrees with the layout, or cannot tell; else what is wrong, in the layout's words."""
    latent = latent.detach().float()
    b_prime = _cell(latent, layout, "b_prime")
    if b_prime is None:
        return None
    others = [name for name in layout.region_names if name != "b_prime"]
    distances: dict[str, torch.Tensor] = {}
    for name in others:
        cell = _cell(latent, layout, name)
        if cell is None or cell.shape != b_prime.shape:
            return None
        distances[name] = (cell - b_prime).abs().mean(dim=(1, 2, 3))  # per grid
    scale = latent.std(dim=(1, 2, 3))
    for index in range(latent.shape[0]):
        if not float(scale[index]) > 0.0:
            continue  # an empty latent (text-to-image): nothing to compare
        own = float(distances["b"][index])
        best = min(others, key=lambda n: float(distances[n][index]))
        if best == "b" or float(distances[best][index]) * CLEAR_FACTOR >= own:
            continue  # B' matches the layout's B, or no cell clearly
        return (
            f"in the latent the sampler starts from (grid {index}), B' is a copy of the cell "
            f"this layout calls {layout.label(best)}, not of its {layout.label('b')}: the grid "
            f"was composed with another arrangement or other example pairs than this "
            f'layout\'s ("{layout.arrangement}", {layout.pairs} example pair(s))'
        )
    return None
