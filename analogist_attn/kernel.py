"""The SAC kernel, once: the rows whose logits SAC clones, computed with fused attention.

Every SAC row set (the rows of an A'_k, or of B') attends over two disjoint key sets:

* the *kept* keys, with the logits ``q_row . k_j`` (its own query);
* the *cloned* keys, with the logits ``s * q_source . k_source`` (the source row's query,
  the source region's keys) and the cloned keys' own values.

(docs/design.md, "Computing it without the N x N matrix" and "Several example pairs
(K-shot)".) The softmax over the union is
computed without the N x N logit matrix, two ways:

* **log-sum-exp merge** where the fused kernel returns each row's log-sum-exp (PyTorch's
  CPU flash kernel): plain attention over each key set, the two outputs weighted by their
  shares of the softmax mass. Same work as plain attention for these rows.
* **augmented vectors** elsewhere (CUDA, MPS, older torch): one fused call with head dim
  ``2d``: query ``[q_row, q_source]``, kept keys ``[k_j, 0]``, cloned keys
  ``[0, s * k_source]``, values zero-padded to ``2d`` (fused kernels want equal query and
  value head dims; without the padding SDPA on CPU falls back to its math path, which
  materialises the logits).

``sac.py`` (UNet self-attention) and ``dit.py`` (a DiT's joint attention) only map their
token layouts onto :class:`Clone` row sets; the diffusers processors call ``sac.py``.
Tensors here are *tokens first*, ``[B, N, H, D]``: a gather of tokens is one contiguous
run of ``H * D`` numbers each, tens of times faster than gathering along a heads-first
tensor's token axis. Fused calls take ``[B, H, n, D]`` views of the gathered tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

# attend(q, k, v, softmax_scale) on [B, H, L, D] -> (out [B, H, L, D], lse [B, H, L, 1])
AttendWithLse = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]
]


@dataclass(frozen=True)
class Clone:
    """One SAC row set, as token indices of the sequence.

    ``rows`` take their cloned logits from ``source_rows`` (same local positions);
    ``cloned_keys`` are the keys whose logits are replaced, ``source_keys`` the keys they
    are read from (in the same order); ``kept_keys`` the keys whose logits the rows keep.
    ``kept_is_rest``: the kept keys are every key but the cloned ones (lets the augmented
    route fill one key tensor in place instead of concatenating two).
    """

    rows: torch.Tensor
    source_rows: torch.Tensor
    cloned_keys: torch.Tensor
    source_keys: torch.Tensor
    kept_keys: torch.Tensor
    kept_is_rest: bool = False

    def subset(self, which: torch.Tensor) -> Clone:
        """The same edit for the rows at positions ``which`` of ``rows`` (with their sources)."""
        return Clone(
            self.rows[which],
            self.source_rows[which],
            self.cloned_keys,
            self.source_keys,
            self.kept_keys,
            self.kept_is_rest,
        )


class TokensFirst:
    """``q, k, v`` as contiguous ``[B, N, H, D]`` (copied only if they are not already,
    on first use); gathers return ``[B, H, n, D]`` views."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self._source = {"q": q, "k": k, "v": v}
        self._full: dict[str, torch.Tensor] = {}

    def full(self, name: str) -> torch.Tensor:
        if name not in self._full:
            self._full[name] = self._source[name].contiguous()
        return self._full[name]

    def take(self, name: str, index: torch.Tensor) -> torch.Tensor:
        return self.full(name).index_select(1, index).transpose(1, 2)

    def padded_v(self, width: int) -> torch.Tensor:
        """Every value zero-padded to head dim ``width``, ``[B, H, N, width]`` (cached)."""
        key = f"v_pad{width}"
        if key not in self._full:
            v = self.full("v")
            self._full[key] = F.pad(v, (0, width - v.shape[-1]))
        return self._full[key].transpose(1, 2)


def sac_rows(
    t: TokensFirst, clone: Clone, scale: float, attend: AttendWithLse | None
) -> torch.Tensor:
    """The SAC rows of ``clone``, ``[B, n, H, D]`` in the values' dtype.

    ``attend``: a fused attention returning the log-sum-exp (:func:`attention_with_lse`),
    or None for the augmented vectors.
    """
    if attend is not None:
        out = _rows_split(t, clone, scale, attend)
    else:
        out = _rows_augmented(t, clone, scale)
    return out.transpose(1, 2).to(t.full("v").dtype)


def _rows_split(t: TokensFirst, clone: Clone, scale: float, attend: AttendWithLse) -> torch.Tensor:
    """Two fused calls over disjoint key sets, merged by softmax mass: ``[B, H, n, D]``."""
    q_rows = t.take("q", clone.rows)
    softmax_scale = q_rows.shape[-1] ** -0.5
    kept, lse_kept = attend(
        q_rows, t.take("k", clone.kept_keys), t.take("v", clone.kept_keys), softmax_scale
    )
    cloned, lse_cloned = attend(
        t.take("q", clone.source_rows),
        t.take("k", clone.source_keys).mul_(scale),
        t.take("v", clone.cloned_keys),
        softmax_scale,
    )
    share_kept = torch.sigmoid(lse_kept - lse_cloned)  # exp(lse_kept) / (sum of both)
    return torch.lerp(cloned.float(), kept.float(), share_kept)


def _rows_augmented(t: TokensFirst, clone: Clone, scale: float) -> torch.Tensor:
    """One fused call on ``2d``-long vectors (same softmax, no log-sum-exp): ``[B, H, n, D]``."""
    q_rows = t.take("q", clone.rows)
    dim = q_rows.shape[-1]
    value_dim = t.full("v").shape[-1]
    q_aug = torch.cat((q_rows, t.take("q", clone.source_rows)), dim=-1)
    del q_rows
    if clone.kept_is_rest:
        # Every key in place: [k_j, 0] outside the cloned keys, [0, s * k_source] there.
        k = t.full("k")
        k_aug = k.new_empty(k.shape[:-1] + (2 * dim,))
        first, second = k_aug[..., :dim], k_aug[..., dim:]
        first.copy_(k)
        first.index_fill_(1, clone.cloned_keys, 0)
        second.zero_()
        second.index_copy_(1, clone.cloned_keys, k.index_select(1, clone.source_keys).mul_(scale))
        k_aug = k_aug.transpose(1, 2)
        values = t.padded_v(2 * dim)
    else:
        kept = t.take("k", clone.kept_keys)
        source = t.take("k", clone.source_keys).mul_(scale)
        k_aug = torch.cat((F.pad(kept, (0, dim)), F.pad(source, (dim, 0))), dim=2)
        del kept, source
        values = torch.cat((t.take("v", clone.kept_keys), t.take("v", clone.cloned_keys)), dim=2)
        values = F.pad(values, (0, 2 * dim - value_dim))
    out = F.scaled_dot_product_attention(q_aug, k_aug, values, scale=dim**-0.5)
    return out[..., :value_dim]


def choose_attend(like: torch.Tensor, use_lse: bool | None = None) -> AttendWithLse | None:
    """The log-sum-exp attention for ``like``'s device and dtype, or None (augmented route).

    ``use_lse``: None picks what the device has; False forces the augmented vectors; True
    insists on the merge (``ValueError`` where there is no such kernel).
    """
    attend = attention_with_lse(like) if use_lse is not False else None
    if use_lse and attend is None:
        raise ValueError(
            f"no fused attention with log-sum-exp for {like.dtype} on {like.device.type}"
        )
    return attend


def attention_with_lse(like: torch.Tensor) -> AttendWithLse | None:
    """Fused attention that also returns the log-sum-exp of each row, where available.

    Public SDPA does not return it; PyTorch's CPU flash kernel does (an ``aten`` op since
    torch 2.2). Elsewhere (CUDA, MPS, older torch, a dtype the kernel lacks): None.
    """
    if like.device.type != "cpu" or not cpu_flash_supports(like.dtype):
        return None
    return _cpu_flash_with_lse


def _cpu_flash_with_lse(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = _CPU_FLASH_WITH_LSE(q, k, v, scale=scale)
    return out, lse.unsqueeze(-1)


@cache
def cpu_flash_supports(dtype: torch.dtype) -> bool:
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


_CPU_FLASH_WITH_LSE: Any
try:
    _CPU_FLASH_WITH_LSE = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
except (AttributeError, RuntimeError):  # torch < 2.2
    _CPU_FLASH_WITH_LSE = None
