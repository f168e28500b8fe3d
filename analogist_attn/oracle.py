"""Naive SAC and CAM, written straight from the definitions (tests and benchmarks only).

These build the full ``batch x heads x N x N`` logit matrix, so they are the oracle the
fast versions in ``sac`` and ``cam`` are checked against, never something to run in a
UNet: at a 1024 px grid one layer's matrix is gigabytes.
"""

from __future__ import annotations

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
        edited[..., a_prime[:, None], b_prime[None, :]] = scale * original[..., a[:, None], b[None, :]]
        edited[..., b_prime[:, None], a_prime[None, :]] = scale * original[..., b[:, None], a[None, :]]
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
