"""Naive SAC and CAM, written straight from the definitions (tests and benchmarks only).

These build the full ``batch x heads x N x N`` logit matrix, so they are the oracle the
fast versions in ``sac``, ``cam`` and ``dit`` are checked against, never something to run
in a model: at a 1024 px grid one layer's matrix is gigabytes.

* UNet: :func:`sac_reference`, :func:`cam_reference`, :func:`plain_reference` on the
  regions of ``geometry`` (the index tensors the fast path uses too).
* DiT joint attention: :func:`joint_region_indices` finds the regions on its own, from
  the cells' pixel rectangles (a 16 x 16 px image token belongs to the cell holding its
  centre pixel), and :func:`joint_reference` edits the full joint logits in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .geometry import RegionTokens


def sac_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    regions: RegionTokens,
    scale: float,
    *,
    batch_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-attention with the SAC logit copy; ``[B, N, heads * d]`` in and out.

    Every copied block is read from the original logits, before any is written. With K
    example pairs (docs/design.md, "Several example pairs (K-shot)"), for every k::

        S[A'_k,i , B'_j] <- s * S[A_k,i , B_j]      S[B'_i , A'_k,j] <- s * S[B_i , A_k,j]
    """
    qh, kh, vh = (_heads_first(t, heads) for t in (q, k, v))
    logits = qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5
    original = logits.clone()
    edited = logits.clone()
    b, b_prime = regions.b, regions.b_prime
    for a, a_prime in regions.examples or ((regions.a, regions.a_prime),):
        edited[..., a_prime[:, None], b_prime[None, :]] = (
            scale * original[..., a[:, None], b[None, :]]
        )
        edited[..., b_prime[:, None], a_prime[None, :]] = (
            scale * original[..., b[:, None], a[None, :]]
        )
    if batch_mask is not None:
        edited = torch.where(batch_mask[:, None, None, None], edited, original)
    return _heads_last(edited.softmax(dim=-1) @ vh)


def cam_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    regions: RegionTokens,
    *,
    batch_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-attention whose probability rows for queries in A, A', B are zeroed."""
    qh, kh, vh = (_heads_first(t, heads) for t in (q, k, v))
    probs = (qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5).softmax(dim=-1)
    masked = probs.clone()
    examples = regions.examples or ((regions.a, regions.a_prime),)
    for rows in [region for pair in examples for region in pair] + [regions.b]:
        masked[:, :, rows, :] = 0
    if batch_mask is not None:
        masked = torch.where(batch_mask[:, None, None, None], masked, probs)
    return _heads_last(masked @ vh)


def plain_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Unedited attention, the same naive way (the baseline SAC must differ from)."""
    qh, kh, vh = (_heads_first(t, heads) for t in (q, k, v))
    probs = (qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5).softmax(dim=-1)
    return _heads_last(probs @ vh)


def _heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, channels = x.shape
    return x.reshape(batch, tokens, heads, channels // heads).transpose(1, 2)


def _heads_last(x: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * dim)


# --- DiT joint attention ------------------------------------------------------------------


def joint_region_indices(
    geometry, latent_h: int, latent_w: int, text: int, token_px: int = 16
) -> dict[str, torch.Tensor]:
    """Joint-sequence indices of each cell's image tokens, in the cell's row-major order.

    ``geometry``: a layout's ``CellGeometry`` (names and pixel rectangles); the grid is
    sampled at ``latent * 8`` px, image tokens (``token_px`` px each, row-major over the
    ``ceil(latent / 2)`` map) follow ``text`` text tokens.
    """
    h, w = math.ceil(latent_h / 2), math.ceil(latent_w / 2)
    sx = geometry.grid_width / (latent_w * 8)  # grid px per sampled px
    sy = geometry.grid_height / (latent_h * 8)
    found: dict[str, list[int]] = {name: [] for name in geometry.names}
    for y in range(h):
        for x in range(w):
            cx, cy = (x * token_px + token_px / 2) * sx, (y * token_px + token_px / 2) * sy
            for name, cell in zip(geometry.names, geometry.rects, strict=True):
                if cell.x <= cx < cell.right and cell.y <= cy < cell.bottom:
                    found[name].append(text + y * w + x)
    sizes = {len(v) for v in found.values()}
    if len(sizes) != 1 or 0 in sizes:
        raise ValueError(f"cells cover unequal token counts: {sizes}")
    return {name: torch.tensor(v) for name, v in found.items()}


def joint_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    regions: dict[str, torch.Tensor],
    text: int,
    sac_scale: float | None = None,
    cam: bool = False,
    quiet_rows: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """Joint attention edited as docs/design.md, "DiT inpainting models", says, ``q, k, v`` ``[B, H, L, D]`` (rotary
    applied) -> ``[B, L, H, D]``, computed in float64.

    ``regions``: ``a, a_prime[, a2, a2_prime, ...], b, b_prime`` (K example pairs). SAC,
    for every k: ``S[A'_k, B'] <- s * S[A_k, B]`` and ``S[B', A'_k] <- s * S[B, A_k]``,
    all read from the original logits. CAM: ``-inf`` on the text keys of every row in an
    A_k, A'_k or B, and of the rows ``quiet_rows[e]`` of batch entry ``e`` (the B' tokens
    outside a region of interest, "text only in the region").
    """
    logits = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    original = logits.clone()
    b, b2 = regions["b"], regions["b_prime"]
    pairs = [
        (regions[n], regions[f"{n}_prime"])
        for n in regions
        if n.startswith("a") and not n.endswith("_prime")
    ]
    if sac_scale is not None:
        for a, a2 in pairs:
            logits[..., a2[:, None], b2[None, :]] = (
                sac_scale * original[..., a[:, None], b[None, :]]
            )
            logits[..., b2[:, None], a2[None, :]] = (
                sac_scale * original[..., b[:, None], a[None, :]]
            )
    if cam:
        text_keys = torch.arange(text)[None, :]
        silenced = torch.cat([region for pair in pairs for region in pair] + [b])
        logits[..., silenced[:, None], text_keys] = float("-inf")
        for entry, rows in enumerate(quiet_rows or ()):
            if len(rows):
                logits[entry, :, rows[:, None], text_keys] = float("-inf")
    out = logits.softmax(dim=-1) @ v.double()
    return out.transpose(1, 2).to(v.dtype)
