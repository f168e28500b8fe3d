"""Self-Attention Cloning, exact and without the N x N logit matrix.

SAC rewrites two blocks of the self-attention logits (see ``reference.sac_reference``)::

    S[A'_i, B'_j] <- s * S[A_i, B_j]      S[B'_i, A'_j] <- s * S[B_i, A_j]

With K example pairs (docs/design.md, "Several example pairs (K-shot)") the rows of each
A'_k clone from A_k with keys in B', and the rows of B' clone from B with keys in *every*
A'_k: the B' rows' cloned key set is ``[A'_1..A'_K]`` with source keys ``[A_1..A_K]`` in the
same order.
Everything below handles that as one concatenated key set, so K = 1 is the paper's case
exactly and B' rows still take two fused calls.

Rows of every query outside A' and B' are untouched: plain fused attention. For a query
in A' each logit is still one dot product, of *augmented* vectors of length ``2d``::

    query  [q_{A'_i}, q_{A_i}]
    key    [k_j, 0]               for keys j outside B'
           [0, s * k_{B_j}]       for the key B'_j

giving ``q_{A'_i}.k_j`` outside B' and ``s * q_{A_i}.k_{B_j}`` inside, exactly SAC's
logits. Values are unchanged, so one fused attention call with the real softmax scale
``1/sqrt(d)`` yields the A' rows; B' rows are the mirror image (A' <-> B', A <-> B).
Values are zero-padded to ``2d`` as well, because fused kernels want equal query and
value head dims (see ``_sac_all``). Memory stays O(N d): the largest extra tensors are
one augmented key set and the padded values, each twice ``k``. Compute is about 1.5x
plain attention (the rows of A' and B', half of all rows, cost twice).

Where the fused kernel can also return each row's log-sum-exp (PyTorch's CPU flash
kernel), the A' rows are instead split by keys: plain attention of ``q_{A'}`` over every
key outside B', plain attention of ``q_A`` over ``s * k_B`` with the values of B', and
the two outputs weighted by their shares of the softmax mass. That is the same softmax,
exactly, at the cost of plain attention.

Both routes are ``kernel`` (shared with the DiT path); this module maps a UNet block's
token map onto the kernel's row sets (:func:`clone_blocks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import defaults, kernel
from .geometry import RegionTokens
from .sdpa import (
    batch_mask_tensor,
    check_qkv,
    check_token_count,
    plain_attention,
    run_on_selection,
    sdpa,
    split_heads,
)

PAPER_SAC_SCALE = defaults.SAC_SCALE


def sac_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    regions: RegionTokens,
    scale: float = PAPER_SAC_SCALE,
    batch_mask: torch.Tensor | Sequence[bool] | None = None,
    upcast: bool = False,
) -> torch.Tensor:
    """Self-attention with SAC, ``[B, N, heads * d]`` in and out (ComfyUI's layout).

    ``regions`` must be built for this block's token map (``tokens.regions_for_block``).
    Batch entries where ``batch_mask`` is False get plain attention. ``upcast`` computes
    in float32 (ComfyUI's ``attn_precision``) and returns the input dtype.
    """
    check_qkv(q, k, v, heads)
    check_token_count(q.shape[1], regions.n_tokens, regions.h, regions.w)
    check_token_count(k.shape[1], regions.n_tokens, regions.h, regions.w)
    mask = batch_mask_tensor(batch_mask, q.shape[0], q.device)

    def edited(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _sac_all(q, k, v, heads, regions, scale)

    def plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return plain_attention(q, k, v, heads)

    return run_on_selection(edited, plain, q, k, v, mask, upcast)


def _sac_all(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    regions: RegionTokens,
    scale: float,
) -> torch.Tensor:
    """SAC on every batch entry: plain rows, then each clone block through the kernel."""
    q4, k4, v4 = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    softmax_scale = q4.shape[-1] ** -0.5
    out = v4.new_empty(q4.shape[:3] + v4.shape[3:])

    untouched = regions.sac_untouched
    if untouched.numel():
        out.index_copy_(1, untouched, sdpa(q4.index_select(1, untouched), k4, v4, softmax_scale))

    tokens = kernel.TokensFirst(q4, k4, v4)
    attend = kernel.attention_with_lse(q4)
    for clone in clone_blocks(regions):
        out.index_copy_(1, clone.rows, kernel.sac_rows(tokens, clone, scale, attend))
    return out.reshape(q.shape[0], q.shape[1], -1)


def clone_blocks(regions: RegionTokens) -> list[kernel.Clone]:
    """The kernel's row sets on a UNet token map: each A'_k (from A_k, keys B' from B),
    then B' (from B, keys every A'_k from A_k). Kept keys are every other key."""
    examples = regions.examples or ((regions.a, regions.a_prime),)
    all_a = regions.all_a if regions.all_a is not None else regions.a
    all_a_prime = regions.all_a_prime if regions.all_a_prime is not None else regions.a_prime
    blocks = [
        kernel.Clone(a_prime, a, regions.b_prime, regions.b, regions.outside_b_prime, True)
        for a, a_prime in examples
    ]
    blocks.append(
        kernel.Clone(regions.b_prime, regions.b, all_a_prime, all_a, regions.outside_a_prime, True)
    )
    return blocks
