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
exactly, at the cost of plain attention (``_cloned_rows_split``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import torch
import torch.nn.functional as F

from . import defaults
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
    """SAC on every batch entry."""
    q4, k4, v4 = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    softmax_scale = q4.shape[-1] ** -0.5
    out = v4.new_empty(q4.shape[:3] + v4.shape[3:])

    untouched = regions.sac_untouched
    if untouched.numel():
        out.index_copy_(1, untouched, sdpa(q4.index_select(1, untouched), k4, v4, softmax_scale))

    # (query rows, their source rows, keys whose logits are cloned, the source keys,
    #  the keys whose logits the rows keep)
    clones = _clone_blocks(regions)
    if _attention_with_lse(q4) is not None:
        for rows, source_rows, cloned_keys, source_keys, kept_keys in clones:
            out.index_copy_(
                1,
                rows,
                _cloned_rows_split(
                    q4, k4, v4, rows, source_rows, cloned_keys, source_keys, kept_keys, scale
                ),
            )
        return out.reshape(q.shape[0], q.shape[1], -1)

    # PyTorch's flash kernels (CPU and CUDA) need the value head dim equal to the query's;
    # with 2d-long q/k and d-long v, SDPA on CPU silently falls back to its math path,
    # which materialises the logit matrix (+600 MB per call at a 512 grid). So v is
    # zero-padded to 2d and the padding's output columns are dropped.
    head_dim = v4.shape[-1]
    v_aug = F.pad(v4, (0, k4.shape[-1]))
    for rows, source_rows, cloned_keys, source_keys, _ in clones:
        q_aug = torch.cat((q4.index_select(1, rows), q4.index_select(1, source_rows)), dim=-1)
        k_aug = _augmented_keys(k4, cloned_keys, source_keys, scale)
        out.index_copy_(1, rows, sdpa(q_aug, k_aug, v_aug, softmax_scale)[..., :head_dim])
        del q_aug, k_aug  # keep one augmented key set alive at a time
    return out.reshape(q.shape[0], q.shape[1], -1)


def _clone_blocks(regions: RegionTokens) -> list[tuple[torch.Tensor, ...]]:
    """``(rows, source rows, cloned keys, source keys, kept keys)`` of every edited block:
    each A'_k (from A_k, keys B' from B), then B' (from B, keys every A'_k from A_k)."""
    examples = regions.examples or ((regions.a, regions.a_prime),)
    all_a = regions.all_a if regions.all_a is not None else regions.a
    all_a_prime = regions.all_a_prime if regions.all_a_prime is not None else regions.a_prime
    blocks = [
        (a_prime, a, regions.b_prime, regions.b, regions.outside_b_prime)
        for a, a_prime in examples
    ]
    blocks.append((regions.b_prime, regions.b, all_a_prime, all_a, regions.outside_a_prime))
    return blocks


def _cloned_rows_split(
    q4: torch.Tensor,
    k4: torch.Tensor,
    v4: torch.Tensor,
    rows: torch.Tensor,
    source_rows: torch.Tensor,
    cloned_keys: torch.Tensor,
    source_keys: torch.Tensor,
    kept_keys: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """SAC rows of A' (or B') as two fused calls over disjoint key sets, then merged.

    The row's softmax runs over the kept keys (logits ``q_row . k_j``) and the cloned
    keys (logits ``s * q_source . k_source``). Each part is plain attention; weighting
    the two outputs by their shares of the softmax mass, ``exp(lse)``, gives the exact
    softmax over the union. Same work as plain attention for these rows.
    """
    attend = _attention_with_lse(q4)
    softmax_scale = q4.shape[-1] ** -0.5
    kept, lse_kept = attend(
        q4.index_select(1, rows),
        k4.index_select(1, kept_keys),
        v4.index_select(1, kept_keys),
        softmax_scale,
    )
    cloned, lse_cloned = attend(
        q4.index_select(1, source_rows),
        k4.index_select(1, source_keys).mul_(scale),
        v4.index_select(1, cloned_keys),
        softmax_scale,
    )
    share_kept = torch.sigmoid(lse_kept - lse_cloned)  # exp(lse_kept) / (sum of both)
    return torch.lerp(cloned.float(), kept.float(), share_kept).to(v4.dtype)


def _attention_with_lse(
    like: torch.Tensor,
) -> (
    Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]
    | None
):
    """Fused attention that also returns the log-sum-exp of each row, where available.

    Public SDPA does not return it; PyTorch's CPU flash kernel does (an ``aten`` op since
    torch 2.2). Elsewhere (CUDA, MPS, older torch, a dtype the kernel lacks) SAC uses
    augmented vectors.
    """
    if like.device.type != "cpu" or not _cpu_flash_supports(like.dtype):
        return None
    return _cpu_flash_with_lse


def _cpu_flash_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, L, H, E]`` in; output ``[B, L, H, E]`` and float32 log-sum-exp ``[B, L, H, 1]``."""
    out, lse = _CPU_FLASH_WITH_LSE(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale
    )
    return out.transpose(1, 2), lse.transpose(1, 2).unsqueeze(-1)


@cache
def _cpu_flash_supports(dtype: torch.dtype) -> bool:
    """Whether this torch's CPU flash op runs ``dtype`` (half came after the op itself)."""
    if _CPU_FLASH_WITH_LSE is None or not dtype.is_floating_point:
        return False
    probe = torch.zeros(1, 1, 2, 8, dtype=dtype)
    try:
        with torch.inference_mode():
            _CPU_FLASH_WITH_LSE(probe, probe, probe, scale=1.0)
    except (RuntimeError, NotImplementedError):
        return False
    return True


try:
    _CPU_FLASH_WITH_LSE = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
except (AttributeError, RuntimeError):  # torch < 2.2
    _CPU_FLASH_WITH_LSE = None


def _augmented_keys(
    k4: torch.Tensor, cloned_keys: torch.Tensor, source_keys: torch.Tensor, scale: float
) -> torch.Tensor:
    """``[k_j, 0]`` everywhere except ``[0, s * k_source]`` at the cloned keys.

    Filled in place, so the only tensor of ``k``'s size or more is the result itself.
    """
    head_dim = k4.shape[-1]
    k_aug = k4.new_empty(k4.shape[:-1] + (2 * head_dim,))
    first, second = k_aug[..., :head_dim], k_aug[..., head_dim:]
    first.copy_(k4)
    first.index_fill_(1, cloned_keys, 0)
    second.zero_()
    second.index_copy_(1, cloned_keys, k4.index_select(1, source_keys).mul_(scale))
    return k_aug
