"""Plain attention in ComfyUI's layout, and the pieces SAC and CAM share.

ComfyUI's attention replace patches receive projected ``q, k, v`` as
``[batch, tokens, heads * dim_head]`` and must return ``[batch, tokens, heads * dim_head]``.
Working on the ``[batch, tokens, heads, dim]`` view keeps gathers and scatters along the
token axis free of copies; :func:`sdpa` moves the heads axis where the fused kernel
wants it without copying either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, L, heads * d]`` -> ``[B, L, heads, d]`` (a view)."""
    batch, tokens, channels = x.shape
    if channels % heads:
        raise ValueError(f"{channels} channels do not split into {heads} attention heads")
    return x.view(batch, tokens, heads, channels // heads)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Fused attention on ``[B, L, H, E]`` tensors; returns ``[B, L, H, Ev]`` (a view).

    ``scale`` is explicit because SAC's augmented vectors are twice as long as the real
    head dim, and the default ``1/sqrt(E)`` would soften its softmax.
    """
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale
    )
    return out.transpose(1, 2)


def plain_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Unedited attention, ``[B, L, heads * d]`` in and out, like ComfyUI's own."""
    q4, k4, v4 = split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)
    out = sdpa(q4, k4, v4, q4.shape[-1] ** -0.5)
    return out.reshape(q.shape[0], q.shape[1], -1)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> None:
    if q.dim() != 3 or k.dim() != 3 or v.dim() != 3:
        raise ValueError(
            "q, k, v must be [batch, tokens, heads * dim_head]; got shapes "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if not (q.shape[0] == k.shape[0] == v.shape[0]) or k.shape[1] != v.shape[1]:
        raise ValueError(
            f"q, k, v disagree on batch or key count: {tuple(q.shape)}, {tuple(k.shape)}, "
            f"{tuple(v.shape)}"
        )
    if heads < 1 or q.shape[-1] % heads or k.shape[-1] != q.shape[-1] or v.shape[-1] % heads:
        raise ValueError(
            f"{heads} heads do not fit q/k/v widths {q.shape[-1]}/{k.shape[-1]}/{v.shape[-1]}"
        )


def check_token_count(n_tokens: int, expected: int, h: int, w: int) -> None:
    if n_tokens != expected:
        raise ValueError(
            f"the region indices were built for a {h} x {w} token map ({expected} tokens) but "
            f"this attention call has {n_tokens} query tokens; build them for this block with "
            "analogist_attn.geometry.regions_for_block"
        )


def batch_mask_tensor(
    batch_mask: torch.Tensor | Sequence[bool] | None, batch: int, device: torch.device
) -> torch.Tensor | None:
    """Validate the batch selection; ``None`` means "edit every entry"."""
    if batch_mask is None:
        return None
    mask = torch.as_tensor(batch_mask, device=device)
    if mask.dtype != torch.bool or mask.shape != (batch,):
        raise ValueError(
            f"batch_mask must be a bool tensor of shape ({batch},) (one flag per batch entry); "
            f"got dtype {mask.dtype}, shape {tuple(mask.shape)}"
        )
    return mask


def run_on_selection(
    edited: AttentionFn,
    plain: AttentionFn,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch_mask: torch.Tensor | None,
    upcast: bool,
) -> torch.Tensor:
    """``edited`` on the selected batch entries, ``plain`` on the rest, same output dtype.

    ComfyUI runs cond and uncond as one batch; the edit may be wanted on one of them only.
    With ``upcast`` (ComfyUI's ``attn_precision == float32``) everything is computed in
    float32 and cast back, so half-precision logits cannot overflow.
    """
    out_dtype = v.dtype
    if upcast and q.dtype != torch.float32:
        q, k, v = q.float(), k.float(), v.float()
    if batch_mask is None or bool(batch_mask.all()):
        return edited(q, k, v).to(out_dtype)
    if not bool(batch_mask.any()):
        return plain(q, k, v).to(out_dtype)
    chosen = batch_mask.nonzero().flatten()
    others = (~batch_mask).nonzero().flatten()
    part = edited(q[chosen], k[chosen], v[chosen])
    out = part.new_empty((q.shape[0],) + tuple(part.shape[1:]))
    out.index_copy_(0, chosen, part)
    out.index_copy_(0, others, plain(q[others], k[others], v[others]))
    return out.to(out_dtype)


def batch_mask_from_cond_or_uncond(
    cond_or_uncond: Sequence[int],
    batch: int,
    on_cond: bool = True,
    on_uncond: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """Batch selection from ComfyUI's ``extra_options["cond_or_uncond"]``.

    ComfyUI concatenates equal chunks, one per entry of ``cond_or_uncond`` (0 = cond,
    1 = uncond), along the batch. Returns ``None`` when every entry is selected, so the
    fast all-batch path runs.
    """
    chunks = len(cond_or_uncond)
    if chunks == 0 or batch % chunks:
        raise ValueError(
            f"batch of {batch} does not split into the {chunks} cond/uncond chunks "
            f"{list(cond_or_uncond)}"
        )
    wanted = [(c == 0 and on_cond) or (c == 1 and on_uncond) for c in cond_or_uncond]
    if all(wanted):
        return None
    flags = torch.tensor(wanted, dtype=torch.bool, device=device)
    return flags.repeat_interleave(batch // chunks)
