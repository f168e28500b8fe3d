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
  nothing from the text); B' rows and text rows are unchanged. With "text only in the
  region" the B' rows outside the region of interest are silenced as well.
* Several example pairs (docs/design.md, "Several example pairs (K-shot)"): each A'_k clones from A_k
  with keys B' (from B); B' clones from B with keys every A'_k (from every A_k); CAM
  silences every A_k, A'_k and B.

The regions come from the one geometry route (``geometry.regions_at_factor``): the UNet's
rule with a token factor of 2 latent pixels (16 px per token) and the text offset ``T``.

How it is computed, with fused attention only (memory O(N d)):

* Rows no edit touches (text rows; A and B rows without CAM; ...) are plain attention over
  all keys, done by ``plain`` (the host's own attention, or another pack's override).
* Rows CAM silences and SAC does not touch are plain attention over the image keys only
  (the text keys come first in the sequence, so that is a slice, not a mask).
* SAC rows (A', B') attend over two disjoint key sets: the keys they keep (everything but
  the cloned region, and no text keys for A' under CAM) with their own query, and the
  cloned region's keys as ``s * k_source`` seen from the source query (``q_A`` for A'),
  with the cloned region's values: the SAC kernel (``kernel.sac_rows``), shared with the
  UNet path, on either of its routes (log-sum-exp merge, augmented vectors).

Tensors are ``[batch, heads, tokens, dim]`` in (Flux's layout) and ``[batch, tokens,
heads, dim]`` out (ready for ``reshape(batch, tokens, heads * dim)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from . import kernel
from .geometry import PX_PER_LATENT, CellGeometry, RegionTokens, regions_at_factor

# PX_PER_LATENT image px per latent pixel, 2 x 2 latent pixels per Flux token.
DIT_PATCH = 2
DIT_TOKEN_PX = PX_PER_LATENT * DIT_PATCH
DIT_TOKEN = "a DiT token"

# plain(q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, D]) -> [B, Lq, H, D]
PlainAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def image_token_map(latent_h: int, latent_w: int, patch: int = DIT_PATCH) -> tuple[int, int]:
    """The ``(h, w)`` image-token map of a latent (the model pads it to whole patches)."""
    return math.ceil(latent_h / patch), math.ceil(latent_w / patch)


@dataclass(frozen=True, eq=False)
class JointRegions:
    """Joint-sequence indices of every region for one (layout, latent size, text length).

    Built by :func:`joint_regions` (cached, read-only): ``image`` holds the regions on the
    image-token map (indices from 0), every index below is ``text`` higher. ``examples``
    lists each pair ``(A_k, A'_k)``; ``all_a``/``all_a_prime`` every A_k/A'_k pair after
    pair (matching positions). ``plans`` caches the row and key sets of each combination
    of edits.
    """

    text: int
    image: RegionTokens
    examples: tuple[tuple[torch.Tensor, torch.Tensor], ...]
    all_a: torch.Tensor
    all_a_prime: torch.Tensor
    b: torch.Tensor
    b_prime: torch.Tensor
    plans: dict = field(default_factory=dict, repr=False)

    @property
    def h(self) -> int:
        return self.image.h

    @property
    def w(self) -> int:
        return self.image.w

    @property
    def a(self) -> torch.Tensor:
        return self.examples[0][0]

    @property
    def a_prime(self) -> torch.Tensor:
        return self.examples[0][1]

    @property
    def n_tokens(self) -> int:
        return self.text + self.h * self.w

    def plan(self, sac: bool, cam: bool, text_in_b_prime: torch.Tensor | None = None) -> _Plan:
        """Row and key sets; ``text_in_b_prime`` (booleans over B''s positions) marks the B'
        rows that keep the text under CAM (None: all, the paper's CAM)."""
        quiet = None
        if cam and text_in_b_prime is not None:
            quiet = ~text_in_b_prime.to("cpu", torch.bool)
            if not bool(quiet.any()):
                quiet = None
        key = (sac, cam, None if quiet is None else quiet.numpy().tobytes())
        if key not in self.plans:
            self.plans[key] = _make_plan(self, sac, cam, quiet)
        return self.plans[key]


@dataclass(frozen=True)
class _Plan:
    plain_rows: torch.Tensor  # attend over every key, unchanged
    image_only_rows: torch.Tensor  # attend over the image keys only (CAM)
    clones: tuple[kernel.Clone, ...]  # SAC rows


def _make_plan(r: JointRegions, sac: bool, cam: bool, quiet: torch.Tensor | None) -> _Plan:
    n = r.n_tokens
    device = r.b.device
    kind = torch.zeros(n, dtype=torch.long)  # 0 plain, 1 image keys only, 2 SAC
    b_prime = r.b_prime.cpu()
    if cam:
        silenced = [r.all_a.cpu(), r.all_a_prime.cpu(), r.b.cpu()]
        if quiet is not None:
            silenced.append(b_prime[quiet])
        kind[torch.cat(silenced)] = 1
    clones: list[kernel.Clone] = []
    if sac:
        kind[torch.cat([r.all_a_prime.cpu(), b_prime])] = 2
        first_key = r.text if cam else 0  # A' rows under CAM keep no text key
        kept_a_prime = _range_without(first_key, n, r.b_prime)
        clones += [
            kernel.Clone(a_prime, a, r.b_prime, r.b, kept_a_prime, not cam)
            for a, a_prime in r.examples
        ]
        b_rows = kernel.Clone(
            r.b_prime, r.b, r.all_a_prime, r.all_a, _range_without(0, n, r.all_a_prime), True
        )
        if quiet is None:
            clones.append(b_rows)
        else:  # B' rows outside the region keep no text key either
            loud = (~quiet).nonzero().flatten().to(device)
            if loud.numel():
                clones.append(b_rows.subset(loud))
            outside = b_rows.subset(quiet.nonzero().flatten().to(device))
            clones.append(
                kernel.Clone(
                    outside.rows,
                    outside.source_rows,
                    r.all_a_prime,
                    r.all_a,
                    _range_without(r.text, n, r.all_a_prime),
                    False,
                )
            )
    return _Plan(
        plain_rows=(kind == 0).nonzero().flatten().to(device),
        image_only_rows=(kind == 1).nonzero().flatten().to(device),
        clones=tuple(clones),
    )


def _range_without(start: int, stop: int, drop: torch.Tensor) -> torch.Tensor:
    keep = torch.zeros(stop, dtype=torch.bool)
    keep[start:] = True
    keep[drop.cpu()] = False
    return keep.nonzero().flatten().to(drop.device)


def joint_regions(
    geometry: CellGeometry,
    latent_hw: Sequence[int],
    text_tokens: int,
    device: torch.device | str | None = None,
) -> JointRegions:
    """Region indices in the joint sequence of a DiT block (cached).

    ``geometry`` is the layout's ``geometry`` (any number of example pairs); ``latent_hw``
    the latent's height and width (before packing); ``text_tokens`` how many text tokens
    precede the image. Raises ``ValueError`` when a cell edge falls inside a 16 px token.
    """
    height, width = (int(x) for x in latent_hw[-2:])
    return _cached_joint_regions(
        geometry, height, width, int(text_tokens), torch.device(device or "cpu")
    )


@lru_cache(maxsize=128)
def _cached_joint_regions(
    geometry: CellGeometry, height: int, width: int, text: int, device: torch.device
) -> JointRegions:
    image = regions_at_factor(geometry, height, width, DIT_PATCH, device, DIT_TOKEN)
    examples = image.examples or ((image.a, image.a_prime),)
    return JointRegions(
        text=text,
        image=image,
        examples=tuple((a + text, a_prime + text) for a, a_prime in examples),
        all_a=torch.cat([a for a, _ in examples]) + text,
        all_a_prime=torch.cat([a_prime for _, a_prime in examples]) + text,
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
    text_in_b_prime: torch.Tensor | None = None,
) -> torch.Tensor:
    """Joint attention with SAC (``sac_scale`` not None) and/or CAM, every batch entry.

    ``q, k, v``: ``[B, H, L, D]`` with ``L = regions.n_tokens``, rotary positions applied.
    Returns ``[B, L, H, D]``. ``plain`` computes the unedited parts (``[B, H, Lq, D]``
    queries against any key subset). ``use_lse`` forces the log-sum-exp merge (True) or
    the augmented vectors (False) for SAC rows; ``None`` picks what the device has.
    ``text_in_b_prime``: CAM's "text only in the region", booleans over B''s positions
    (``regions.b_prime`` order), True where the row keeps the text; None: all of B'.
    """
    batch, heads, tokens, dim = q.shape
    if tokens != regions.n_tokens or k.shape[2] != tokens or v.shape[2] != tokens:
        raise ValueError(
            f"the joint sequence has {tokens} queries and {k.shape[2]} keys, but the regions "
            f"were built for {regions.text} text + {regions.h} x {regions.w} image tokens "
            f"({regions.n_tokens})"
        )
    if text_in_b_prime is not None and text_in_b_prime.numel() != regions.b_prime.numel():
        raise ValueError(
            f"text_in_b_prime has {text_in_b_prime.numel()} flags for "
            f"{regions.b_prime.numel()} B' tokens"
        )
    plan = regions.plan(sac_scale is not None, cam, text_in_b_prime)
    tokens_first = kernel.TokensFirst(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    out = v.new_empty(batch, tokens, heads, v.shape[-1])
    if plan.plain_rows.numel():
        part = plain(tokens_first.take("q", plan.plain_rows), k, v)
        out.index_copy_(1, plan.plain_rows, part.to(out.dtype))
    if plan.image_only_rows.numel():
        text = regions.text
        part = plain(tokens_first.take("q", plan.image_only_rows), k[:, :, text:], v[:, :, text:])
        out.index_copy_(1, plan.image_only_rows, part.to(out.dtype))
    if plan.clones:
        assert sac_scale is not None  # a plan clones rows only when SAC is on
        attend = kernel.choose_attend(q, use_lse)
        for clone in plan.clones:
            rows = kernel.sac_rows(tokens_first, clone, float(sac_scale), attend)
            out.index_copy_(1, clone.rows, rows.to(out.dtype))
    return out
