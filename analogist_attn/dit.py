"""SAC and CAM on a DiT's joint attention (Flux.1 Fill), exact, without the N x N matrix.

A Flux block attends over one joint sequence ``[text tokens; image tokens]``. Image tokens
are packed latent patches: 2 x 2 latent pixels, 16 x 16 image pixels each, row-major over
a ``ceil(H/2) x ceil(W/2)`` map of the ``H x W`` latent. Queries and keys arrive with the
rotary positions already applied, as the model computes them. With ``T`` text tokens the
image token ``y * w + x`` sits at joint index ``T + y * w + x``.

The edits (docs/design.md, "DiT inpainting models"):

* SAC, on image-to-image logits only: ``S[A'_i, B'_j] <- s * S[A_i, B_j]`` and
  ``S[B'_i, A'_j] <- s * S[B_i, A_j]``. Text rows and text keys are untouched.
* CAM: rows of image tokens in A, A' and B get ``-inf`` on every text key (they take
  nothing from the text); B' rows and text rows are unchanged.

How it is computed, with fused attention only (memory O(N d)):

* Rows no edit touches (text rows; A and B rows without CAM; ...) are plain attention over
  all keys, done by ``plain`` (the host's own attention, or another pack's override).
* Rows CAM silences and SAC does not touch are plain attention over the image keys only
  (the text keys come first in the sequence, so that is a slice, not a mask).
* SAC rows (A', B') attend over two disjoint key sets: the keys they keep (everything but
  the cloned region, and no text keys for A' under CAM) with their own query, and the
  cloned region's keys as ``s * k_source`` seen from the source query (``q_A`` for A'),
  with the cloned region's values. Where the fused kernel returns each row's log-sum-exp
  (PyTorch's CPU flash kernel) the two partial attentions are merged by their softmax mass;
  elsewhere one call on augmented vectors of head dim ``2d`` gives the same softmax:
  query ``[q_row, q_source]``, kept keys ``[k_j, 0]``, cloned keys ``[0, s * k_source]``.

Tensors are ``[batch, heads, tokens, dim]`` in (Flux's layout) and ``[batch, tokens,
heads, dim]`` out (ready for ``reshape(batch, tokens, heads * dim)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from .geometry import CELL_MULTIPLE, PX_PER_LATENT, region_tokens
from .sac import _CPU_FLASH_WITH_LSE, _cpu_flash_supports  # one probe of the CPU flash op

# PX_PER_LATENT image px per latent pixel, 2 x 2 latent pixels per Flux token.
DIT_PATCH = 2
DIT_TOKEN_PX = PX_PER_LATENT * DIT_PATCH
# The grid node's cells are multiples of CELL_MULTIPLE px; a DiT needs 16 px, the pack asks
# for the same 64 as for the UNets.
CELL_STEP_PX = CELL_MULTIPLE
REGION_NAMES = ("a", "a_prime", "b", "b_prime")
_EDGE_TOLERANCE = 1e-6

# plain(q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, D]) -> [B, Lq, H, D]
PlainAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def image_token_map(latent_h: int, latent_w: int, patch: int = DIT_PATCH) -> tuple[int, int]:
    """The ``(h, w)`` image-token map of a latent (the model pads it to whole patches)."""
    return math.ceil(latent_h / patch), math.ceil(latent_w / patch)


@dataclass(frozen=True, eq=False)
class JointRegions:
    """Joint-sequence indices of A, A', B, B' for one (layout, latent size, text length).

    Built by :func:`joint_regions` (cached, read-only). ``a[i]``, ``a_prime[i]``, ``b[i]``,
    ``b_prime[i]`` are the same local position of each cell. ``plans`` caches the row and
    key sets of each combination of edits.
    """

    text: int
    h: int
    w: int
    a: torch.Tensor
    a_prime: torch.Tensor
    b: torch.Tensor
    b_prime: torch.Tensor
    plans: dict = field(default_factory=dict, repr=False)

    @property
    def n_tokens(self) -> int:
        return self.text + self.h * self.w

    def plan(self, sac: bool, cam: bool) -> _Plan:
        key = (sac, cam)
        if key not in self.plans:
            self.plans[key] = _make_plan(self, sac, cam)
        return self.plans[key]


@dataclass(frozen=True)
class _Clone:
    """One SAC row set: rows, their source rows, the cloned keys, the source keys, kept keys."""

    rows: torch.Tensor
    source_rows: torch.Tensor
    cloned_keys: torch.Tensor
    source_keys: torch.Tensor
    kept_keys: torch.Tensor


@dataclass(frozen=True)
class _Plan:
    plain_rows: torch.Tensor  # attend over every key, unchanged
    image_only_rows: torch.Tensor  # attend over the image keys only (CAM)
    clones: tuple[_Clone, ...]  # SAC rows


def _make_plan(r: JointRegions, sac: bool, cam: bool) -> _Plan:
    n = r.n_tokens
    device = r.a.device
    kind = torch.zeros(n, dtype=torch.long)  # 0 plain, 1 image keys only, 2 SAC
    if cam:
        kind[torch.cat([r.a, r.a_prime, r.b]).cpu()] = 1
    clones: tuple[_Clone, ...] = ()
    if sac:
        kind[torch.cat([r.a_prime, r.b_prime]).cpu()] = 2
        first_key = r.text if cam else 0  # A' rows under CAM keep no text key
        clones = (
            _Clone(r.a_prime, r.a, r.b_prime, r.b, _range_without(first_key, n, r.b_prime)),
            _Clone(r.b_prime, r.b, r.a_prime, r.a, _range_without(0, n, r.a_prime)),
        )
    return _Plan(
        plain_rows=(kind == 0).nonzero().flatten().to(device),
        image_only_rows=(kind == 1).nonzero().flatten().to(device),
        clones=clones,
    )


def _range_without(start: int, stop: int, drop: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros(stop, dtype=torch.bool)
    keep[start:] = True
    keep[drop.cpu()] = False
    return keep.nonzero().flatten().to(drop.device)


def joint_regions(
    fractions: Mapping[str, Sequence[float]],
    latent_hw: Sequence[int],
    text_tokens: int,
    device: torch.device | str | None = None,
) -> JointRegions:
    """Region indices in the joint sequence of a DiT block (cached).

    ``fractions`` is the layout's ``cell_fractions()``; ``latent_hw`` the latent's height
    and width (before packing); ``text_tokens`` how many text tokens precede the image.
    Raises ``ValueError`` when a cell edge falls inside a 16 px token.
    """
    key = tuple(tuple(float(x) for x in fractions[name]) for name in REGION_NAMES)
    height, width = (int(x) for x in latent_hw[-2:])
    return _cached_joint_regions(
        key, height, width, int(text_tokens), torch.device(device or "cpu")
    )


@lru_cache(maxsize=128)
def _cached_joint_regions(
    key: tuple[tuple[float, ...], ...], height: int, width: int, text: int, device: torch.device
) -> JointRegions:
    h, w = image_token_map(height, width)
    for name, box in zip(REGION_NAMES, key, strict=True):
        for frac, size in zip(box, (w, h, w, h), strict=True):
            edge = frac * size
            if abs(edge - round(edge)) > _EDGE_TOLERANCE * max(1.0, abs(edge)):
                raise ValueError(
                    f"A cell edge of {name} (at {frac * size * DIT_TOKEN_PX:g} px) falls inside a "
                    f"{DIT_TOKEN_PX} px DiT token of the {w * DIT_TOKEN_PX} x {h * DIT_TOKEN_PX} px "
                    f"grid. Set GridCompose's cell width and height to multiples of "
                    f"{CELL_STEP_PX} px (e.g. 512) and sample the grid it makes."
                )
    fractions = dict(zip(REGION_NAMES, key, strict=True))
    image = region_tokens(fractions, h, w, device)
    return JointRegions(
        text=text,
        h=h,
        w=w,
        a=image.a + text,
        a_prime=image.a_prime + text,
        b=image.b + text,
        b_prime=image.b_prime + text,
    )


def sdpa_plain(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Plain fused attention, ``[B, H, L, D]`` in, ``[B, L, H, D]`` out."""
    return F.scaled_dot_product_attention(q, k, v, scale=q.shape[-1] ** -0.5).transpose(1, 2)


def joint_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    regions: JointRegions,
    sac_scale: float | None = None,
    cam: bool = False,
    plain: PlainAttention = sdpa_plain,
    use_lse: bool | None = None,
) -> torch.Tensor:
    """Joint attention with SAC (``sac_scale`` not None) and/or CAM, every batch entry.

    ``q, k, v``: ``[B, H, L, D]`` with ``L = regions.n_tokens``, rotary positions applied.
    Returns ``[B, L, H, D]``. ``plain`` computes the unedited parts (``[B, H, Lq, D]``
    queries against any key subset). ``use_lse`` forces the log-sum-exp merge (True) or
    the augmented vectors (False) for SAC rows; ``None`` picks what the device has.
    """
    batch, heads, tokens, dim = q.shape
    if tokens != regions.n_tokens or k.shape[2] != tokens or v.shape[2] != tokens:
        raise ValueError(
            f"the joint sequence has {tokens} queries and {k.shape[2]} keys, but the regions "
            f"were built for {regions.text} text + {regions.h} x {regions.w} image tokens "
            f"({regions.n_tokens})"
        )
    plan = regions.plan(sac_scale is not None, cam)
    # Gathers run along the token axis of a [B, L, H, D] copy: each token is one contiguous
    # run of H * D numbers there, tens of times faster than gathering along dim 2 of
    # [B, H, L, D]. SDPA takes the [B, H, n, D] views of the gathered tokens as they are.
    tokens_first = _TokensFirst(q, k, v)
    out = v.new_empty(batch, tokens, heads, v.shape[-1])
    if plan.plain_rows.numel():
        part = plain(tokens_first.q(plan.plain_rows), k, v)
        out.index_copy_(1, plan.plain_rows, part.to(out.dtype))
    if plan.image_only_rows.numel():
        text = regions.text
        part = plain(tokens_first.q(plan.image_only_rows), k[:, :, text:], v[:, :, text:])
        out.index_copy_(1, plan.image_only_rows, part.to(out.dtype))
    if plan.clones:
        lse = _attention_with_lse(q) if use_lse is not False else None
        if use_lse and lse is None:
            raise ValueError(
                f"no fused attention with log-sum-exp for {q.dtype} on {q.device.type}"
            )
        for clone in plan.clones:
            if lse is not None:
                rows = _clone_rows_split(tokens_first, clone, float(sac_scale), lse)
            else:
                rows = _clone_rows_augmented(tokens_first, clone, float(sac_scale))
            out.index_copy_(1, clone.rows, rows.to(out.dtype))
    return out


class _TokensFirst:
    """``q, k, v`` as contiguous ``[B, L, H, D]`` (made on first use); gathers return
    ``[B, H, n, D]`` views."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        self._source = {"q": q, "k": k, "v": v}
        self._copies: dict[str, torch.Tensor] = {}

    def _take(self, name: str, index: torch.Tensor) -> torch.Tensor:
        if name not in self._copies:
            self._copies[name] = self._source[name].transpose(1, 2).contiguous()
        return self._copies[name].index_select(1, index).transpose(1, 2)

    def q(self, index: torch.Tensor) -> torch.Tensor:
        return self._take("q", index)

    def k(self, index: torch.Tensor) -> torch.Tensor:
        return self._take("k", index)

    def v(self, index: torch.Tensor) -> torch.Tensor:
        return self._take("v", index)


def _clone_rows_split(t: _TokensFirst, clone: _Clone, scale: float, attend) -> torch.Tensor:
    """SAC rows as two fused calls over disjoint key sets, merged by softmax mass."""
    q_rows = t.q(clone.rows)
    softmax_scale = q_rows.shape[-1] ** -0.5
    kept, lse_kept = attend(q_rows, t.k(clone.kept_keys), t.v(clone.kept_keys), softmax_scale)
    cloned, lse_cloned = attend(
        t.q(clone.source_rows),
        t.k(clone.source_keys).mul_(scale),
        t.v(clone.cloned_keys),
        softmax_scale,
    )
    share_kept = torch.sigmoid(lse_kept - lse_cloned)  # exp(lse_kept) / (both)
    merged = torch.lerp(cloned.float(), kept.float(), share_kept)  # [B, H, rows, D]
    return merged.transpose(1, 2)


def _clone_rows_augmented(t: _TokensFirst, clone: _Clone, scale: float) -> torch.Tensor:
    """SAC rows as one fused call on ``2d``-long vectors (same softmax, no log-sum-exp)."""
    q_rows = t.q(clone.rows)
    dim = q_rows.shape[-1]
    q_aug = torch.cat((q_rows, t.q(clone.source_rows)), dim=-1)
    kept = t.k(clone.kept_keys)
    source = t.k(clone.source_keys).mul_(scale)
    k_aug = torch.cat((F.pad(kept, (0, dim)), F.pad(source, (dim, 0))), dim=2)  # [k_j, 0], [0, s k]
    del kept, source
    values = torch.cat((t.v(clone.kept_keys), t.v(clone.cloned_keys)), dim=2)
    value_dim = values.shape[-1]
    # Fused kernels want the value head dim equal to the query's; the padding is dropped.
    values = F.pad(values, (0, q_aug.shape[-1] - value_dim))
    out = F.scaled_dot_product_attention(q_aug, k_aug, values, scale=dim**-0.5)
    return out[..., :value_dim].transpose(1, 2)


def _attention_with_lse(like: torch.Tensor):
    """Fused attention returning ``(out [B, H, L, D], lse [B, H, L, 1])``, where available."""
    if like.device.type != "cpu" or not _cpu_flash_supports(like.dtype):
        return None
    return _cpu_flash_with_lse


def _cpu_flash_with_lse(q, k, v, scale: float):
    out, lse = _CPU_FLASH_WITH_LSE(q, k, v, scale=scale)
    return out, lse.unsqueeze(-1)
