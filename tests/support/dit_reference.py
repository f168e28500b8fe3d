"""Naive SAC and CAM on a DiT's joint attention, straight from docs/design.md, "DiT inpainting
models" (the tests' oracle).

Builds the full ``batch x heads x L x L`` logit matrix of the joint sequence
``[text; image]`` and edits it as written: SAC copies ``s * S[A_i, B_j]`` into
``S[A'_i, B'_j]`` and ``s * S[B_i, A_j]`` into ``S[B'_i, A'_j]``; CAM puts ``-inf`` on the
text keys of every image row in A, A', B. The regions are found here on their own, from
the layout's pixel rectangles: an image token (16 x 16 px) belongs to the cell holding its
centre pixel, and each cell's tokens are listed row-major (its local positions).
"""

from __future__ import annotations

import math

import torch

TOKEN_PX = 16
NAMES = ("a", "a_prime", "b", "b_prime")


def region_indices(layout, latent_h: int, latent_w: int, text: int) -> dict[str, torch.Tensor]:
    """Joint-sequence indices of each cell's tokens, in the cell's row-major order."""
    h, w = math.ceil(latent_h / 2), math.ceil(latent_w / 2)
    found: dict[str, list[int]] = {name: [] for name in NAMES}
    for y in range(h):
        for x in range(w):
            cx, cy = x * TOKEN_PX + TOKEN_PX / 2, y * TOKEN_PX + TOKEN_PX / 2
            for name in NAMES:
                cell = layout.cell(name)
                if cell.x <= cx < cell.right and cell.y <= cy < cell.bottom:
                    found[name].append(text + y * w + x)
    sizes = {len(v) for v in found.values()}
    assert len(sizes) == 1 and 0 not in sizes, f"cells cover unequal token counts: {sizes}"
    return {name: torch.tensor(v) for name, v in found.items()}


def joint_reference(
    q, k, v, regions: dict[str, torch.Tensor], text: int, sac_scale=None, cam=False
):
    """``q, k, v`` ``[B, H, L, D]`` (rotary applied) -> ``[B, L, H, D]``."""
    logits = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    original = logits.clone()
    a, a2, b, b2 = (regions[name] for name in NAMES)
    if sac_scale is not None:
        logits[..., a2[:, None], b2[None, :]] = sac_scale * original[..., a[:, None], b[None, :]]
        logits[..., b2[:, None], a2[None, :]] = sac_scale * original[..., b[:, None], a[None, :]]
    if cam:
        silenced = torch.cat([a, a2, b])
        logits[..., silenced[:, None], torch.arange(text)[None, :]] = float("-inf")
    out = logits.softmax(dim=-1) @ v.double()
    return out.transpose(1, 2).to(v.dtype)
