"""Cross-Attention Masking: only B' listens to the text prompt.

CAM zeroes the cross-attention rows of every query in A, A' and B after the softmax
(see ``reference.cam_reference``). Cross-attention rows are independent of each other,
so zeroing a row is the same as never computing it: :func:`cam_attention` attends only
for the rows CAM keeps, and :func:`cam_mask_output` applies the same edit to an output
some other attention implementation (e.g. another pack's attn2 patch) already computed.
The block's output projection, bias included, still runs on the zero rows afterwards.

:func:`cam_projected_output` does the same *after* the output projection: a zero row
projects to ``to_out(0)`` (the bias, as the block computes it), so replacing the dropped
rows of the projected output by that one row is CAM, exactly. This is how the ComfyUI
patch applies CAM (an attn2 output patch), leaving the cross-attention slot itself free
for other packs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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


def cam_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    regions: RegionTokens,
    batch_mask: torch.Tensor | Sequence[bool] | None = None,
    upcast: bool = False,
) -> torch.Tensor:
    """Cross-attention with CAM: ``q`` ``[B, N, heads*d]`` against text ``k, v`` ``[B, T, .]``.

    Batch entries where ``batch_mask`` is False get plain cross-attention; ``upcast``
    computes in float32 and returns the input dtype.
    """
    check_qkv(q, k, v, heads)
    check_token_count(q.shape[1], regions.n_tokens, regions.h, regions.w)
    mask = batch_mask_tensor(batch_mask, q.shape[0], q.device)

    def edited(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return _cam_all(q, k, v, heads, regions)

    def plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return plain_attention(q, k, v, heads)

    return run_on_selection(edited, plain, q, k, v, mask, upcast)


def cam_mask_output(
    out: torch.Tensor,
    regions: RegionTokens,
    batch_mask: torch.Tensor | Sequence[bool] | None = None,
) -> torch.Tensor:
    """CAM applied to an already computed cross-attention output ``[B, N, C]``.

    Exact for any attention function whose rows do not interact (true of cross-attention).
    Uses ``masked_fill`` rather than a multiply so that rows a wrapped function left
    non-finite still come out as exact zeros.
    """
    check_token_count(out.shape[1], regions.n_tokens, regions.h, regions.w)
    mask = batch_mask_tensor(batch_mask, out.shape[0], out.device)
    keep = regions.cam_keep[None, :]
    if mask is not None:
        keep = keep | ~mask[:, None]
    return out.masked_fill(~keep[..., None], 0)


def cam_projected_output(
    out: torch.Tensor,
    regions: RegionTokens,
    projected_zero: torch.Tensor,
    batch_mask: torch.Tensor | Sequence[bool] | None = None,
) -> torch.Tensor:
    """CAM on the *projected* cross-attention output ``[B, N, C]`` of one block.

    ``projected_zero`` is the block's output projection applied to an all-zero attention
    row (``[C]``, or anything broadcasting to ``[1, 1, C]``): what every row CAM drops
    becomes. Rows CAM keeps (B', and batch entries where ``batch_mask`` is False) are
    returned untouched.
    """
    check_token_count(out.shape[1], regions.n_tokens, regions.h, regions.w)
    mask = batch_mask_tensor(batch_mask, out.shape[0], out.device)
    keep = regions.cam_keep[None, :]
    if mask is not None:
        keep = keep | ~mask[:, None]
    fill = projected_zero.to(out.dtype).reshape(1, 1, -1)
    return torch.where(keep[..., None], out, fill)


def _cam_all(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, regions: RegionTokens
) -> torch.Tensor:
    """CAM on every batch entry: attend for the kept rows, zeros elsewhere."""
    q4, k4, v4 = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    rows = regions.cam_rows
    kept = sdpa(q4.index_select(1, rows), k4, v4, q4.shape[-1] ** -0.5)
    out = kept.new_zeros(q4.shape[:3] + v4.shape[3:])
    out.index_copy_(1, rows, kept)
    return out.reshape(q.shape[0], q.shape[1], -1)


def cam_projected_output_rows(
    out: torch.Tensor,
    keep: torch.Tensor,
    projected_zero: torch.Tensor,
    batch_mask: torch.Tensor | Sequence[bool] | None = None,
) -> torch.Tensor:
    """:func:`cam_projected_output` with the kept rows given per batch entry.

    ``keep`` is ``[N]`` or ``[B, N]`` booleans (e.g. text only for the B' tokens inside a
    region of interest, ``region.RegionTokensInside.keep_rows``); rows not kept become
    ``projected_zero``; entries where ``batch_mask`` is False are returned untouched.
    """
    if keep.shape[-1] != out.shape[1]:
        raise ValueError(f"CAM: {keep.shape[-1]} row flags for {out.shape[1]} tokens")
    mask = batch_mask_tensor(batch_mask, out.shape[0], out.device)
    keep = keep.to(out.device)
    keep = keep[None, :] if keep.ndim == 1 else keep
    if mask is not None:
        keep = keep | ~mask[:, None]
    fill = projected_zero.to(out.dtype).reshape(1, 1, -1)
    return torch.where(keep[..., None], out, fill)
