"""Ranking B' candidates by the paper's CLIP direction similarity (plain torch).

For one analogy A : A' :: B : B'_n with an image encoder E (CLIP's projected image
features), the score of candidate n is

    cos(E(A') - E(A), E(B'_n) - E(B))

the direction A -> A' compared with the direction B -> B'_n. The paper reports the mean
over the samples of an analogy; an artist wants the best one first, so this module sorts.

Batches follow the pack's convention (Grid Compose, Grid Crop): with N images of B, the
candidate at batch index i belongs to B number ``i mod N``. A and A' are one image for
all B, or one per B. The encoder is not called here: the caller passes embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class RankingError(ValueError):
    """Inputs that cannot be ranked; the message names the input and the fix."""


def direction_similarity(
    e_a: torch.Tensor, e_a_prime: torch.Tensor, e_b: torch.Tensor, e_b_prime: torch.Tensor
) -> torch.Tensor:
    """``cos(E(A') - E(A), E(B') - E(B))`` row by row (all ``[n, dim]``, broadcastable).

    Computed in float64. A zero direction (A' encoded the same as A, or B' as B) has no
    angle: its score is 0, not NaN.
    """
    source = e_a_prime.double() - e_a.double()
    target = e_b_prime.double() - e_b.double()
    source, target = torch.broadcast_tensors(source, target)
    dot = (source * target).sum(-1)
    norms = source.norm(dim=-1) * target.norm(dim=-1)
    return torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(torch.float64).tiny), 0.0)


@dataclass(frozen=True)
class Ranking:
    """Scores and order of the candidates, per B.

    ``scores[i]`` is the score of candidate i (batch index in the input). ``order[j]`` lists
    the batch indices of the candidates of B number j, best first.
    """

    scores: tuple[float, ...]
    order: tuple[tuple[int, ...], ...]
    # True for a candidate that encodes like its B (no change B -> B', score 0): said in text.
    unchanged: tuple[bool, ...] = ()

    @property
    def per_b(self) -> int:
        return len(self.order[0])

    def interleaved(self, top: int | None = None) -> list[int]:
        """Batch indices rank by rank: every B's best, then every B's second, ...

        So the output keeps the pack's convention (index i belongs to B number i mod N),
        and ``top=1`` gives one image per B in B's order.
        """
        depth = self.per_b if top is None else max(0, min(top, self.per_b))
        return [self.order[j][rank] for rank in range(depth) for j in range(len(self.order))]

    def text(self, top: int | None = None) -> list[str]:
        """One line per B: ``B 1 of 2: #2 0.4123, #0 0.2011, ...`` (batch index, score)."""
        lines = []
        for j, indices in enumerate(self.order):
            ranked = ", ".join(
                f"#{i} {self.scores[i]:.4f}" + (" (same as B)" if self._unchanged(i) else "")
                for i in indices
            )
            lines.append(f"B {j + 1} of {len(self.order)}: {ranked}")
        return lines

    def _unchanged(self, i: int) -> bool:
        return bool(self.unchanged) and self.unchanged[i]


def check_batches(n_a: int, n_a_prime: int, n_b: int, count: int) -> None:
    """Refuse batch sizes that cannot be ranked, before anything is encoded."""
    if n_b == 0:
        raise RankingError("b: no images of B were given.")
    if count == 0:
        raise RankingError(
            "b_prime: no candidates to rank (an empty batch). Connect the generated B' images, "
            "e.g. Grid Crop's b_prime from a KSampler run with batch size 4."
        )
    if count % n_b:
        raise RankingError(
            f"b_prime: {count} candidates do not split over {n_b} images of B (candidate i "
            f"belongs to B number i mod {n_b}, so the count must be a multiple of {n_b}). "
            f"Sample the same number of candidates for every B."
        )
    for what, n in (("a", n_a), ("a_prime", n_a_prime)):
        if n not in (1, n_b):
            raise RankingError(
                f"{what}: got {n} images for {n_b} image(s) of B. Give one {what} for all B, "
                f"or one per B ({n_b})."
            )


# A direction shorter than this fraction of the embeddings' own length is no direction:
# the same picture encodes to the same embedding up to float rounding (about 1e-7).
ZERO_DIRECTION = 1e-5


def _flat(start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Per row: is ``end - start`` no direction at all (see :data:`ZERO_DIRECTION`)?"""
    start, end = torch.broadcast_tensors(start.double(), end.double())
    scale = torch.maximum(start.norm(dim=-1), end.norm(dim=-1))
    return (end - start).norm(dim=-1) <= ZERO_DIRECTION * scale.clamp_min(1e-30)


def check_direction(e_a: torch.Tensor, e_a_prime: torch.Tensor) -> None:
    """Refuse A' that encodes like A: every candidate would score 0, which means nothing."""
    for what, e in (("a", e_a), ("a_prime", e_a_prime)):
        if not bool(torch.isfinite(e).all()):
            raise RankingError(
                f"{what}: the CLIP model gave NaN or infinite embeddings (a vision model run "
                "in float16 overflowing?). Load the CLIP vision model in float32."
            )
    flat = _flat(e_a, e_a_prime)
    if bool(flat.any()):
        rows = [str(int(i) + 1) for i in torch.nonzero(flat).flatten()]
        which = f" (for B number {', '.join(rows)})" if flat.numel() > 1 else ""
        raise RankingError(
            f"a_prime: A' looks the same as A to the CLIP model{which}, so there is no "
            "change A -> A' to compare the candidates with: every score would be 0. Connect "
            "the example's 'after' image to a_prime and its 'before' image to a."
        )


def rank_candidates(
    e_a: torch.Tensor, e_a_prime: torch.Tensor, e_b: torch.Tensor, e_b_prime: torch.Tensor
) -> Ranking:
    """Score and sort candidates ``e_b_prime`` ([M, dim]) for the B in ``e_b`` ([N, dim]).

    Candidate i belongs to B number ``i mod N``; ``e_a`` and ``e_a_prime`` have 1 or N rows.
    Ties keep the batch order.
    """
    n_b, count = int(e_b.shape[0]), int(e_b_prime.shape[0])
    check_batches(int(e_a.shape[0]), int(e_a_prime.shape[0]), n_b, count)
    dims = {int(t.shape[-1]) for t in (e_a, e_a_prime, e_b, e_b_prime)}
    if len(dims) != 1:
        raise RankingError(
            f"the embeddings have different sizes {sorted(dims)}: use one encoder for all."
        )

    check_direction(e_a, e_a_prime)
    owner = torch.arange(count) % n_b

    def per_candidate(e: torch.Tensor) -> torch.Tensor:
        return e[owner] if e.shape[0] == n_b else e.expand(count, -1)

    scores = direction_similarity(
        per_candidate(e_a), per_candidate(e_a_prime), e_b[owner], e_b_prime
    )
    # Encoder rounding (a batch of 4 is not computed like a batch of 1) leaves a tiny,
    # random direction for a candidate that is B itself: its angle is noise, its score 0.
    unchanged = _flat(e_b[owner], e_b_prime)
    scores = torch.where(unchanged, 0.0, scores)
    order = []
    for j in range(n_b):
        members = list(range(j, count, n_b))
        members.sort(key=lambda i: -float(scores[i]))  # stable: ties keep batch order
        order.append(tuple(members))
    return Ranking(
        scores=tuple(float(s) for s in scores),
        order=tuple(order),
        unchanged=tuple(bool(u) for u in unchanged),
    )
