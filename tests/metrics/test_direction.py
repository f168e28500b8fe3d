"""The paper's CLIP direction similarity and the per-B ranking, on given embeddings."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_metrics.direction import (
    RankingError,
    direction_similarity,
    rank_candidates,
)


def cos_naive(a, a_prime, b, b_prime) -> float:
    """cos(E(A') - E(A), E(B') - E(B)) straight from the definition, in numpy."""
    u = np.asarray(a_prime, np.float64) - np.asarray(a, np.float64)
    v = np.asarray(b_prime, np.float64) - np.asarray(b, np.float64)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def embeddings(n: int, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_scores_equal_the_definition_and_order_follows_them() -> None:
    a, a_prime, b = embeddings(1, seed=1), embeddings(1, seed=2), embeddings(1, seed=3)
    candidates = embeddings(7, seed=4)
    ranking = rank_candidates(a, a_prime, b, candidates)
    expected = [cos_naive(a[0], a_prime[0], b[0], c) for c in candidates]
    np.testing.assert_allclose(ranking.scores, expected, rtol=1e-6, atol=1e-7)
    assert list(ranking.order[0]) == list(np.argsort(expected)[::-1])
    assert ranking.interleaved(2) == list(np.argsort(expected)[::-1][:2])


def test_a_candidate_along_the_example_direction_scores_one() -> None:
    a, a_prime, b = embeddings(1, seed=1), embeddings(1, seed=2), embeddings(1, seed=3)
    step = a_prime - a
    candidates = torch.cat([b + 0.5 * step, b - step, b + embeddings(1, seed=9)])
    ranking = rank_candidates(a, a_prime, b, candidates)
    assert ranking.scores[0] == pytest.approx(1.0, abs=1e-6)
    assert ranking.scores[1] == pytest.approx(-1.0, abs=1e-6)
    assert ranking.order[0] == (0, 2, 1)


def test_several_b_are_ranked_each_on_their_own_candidates() -> None:
    # Two B; candidate i belongs to B number i mod 2; one A' per B.
    a = embeddings(1, seed=1)
    a_prime, b = embeddings(2, seed=2), embeddings(2, seed=3)
    candidates = embeddings(6, seed=4)
    ranking = rank_candidates(a, a_prime, b, candidates)
    for j in range(2):
        members = [i for i in range(6) if i % 2 == j]
        scores = {i: cos_naive(a[0], a_prime[j], b[j], candidates[i]) for i in members}
        np.testing.assert_allclose(
            [ranking.scores[i] for i in members], [scores[i] for i in members], rtol=1e-6
        )
        assert list(ranking.order[j]) == sorted(members, key=lambda i: -scores[i])
    # Rank by rank: every B's best, then every B's second.
    assert ranking.interleaved(1) == [ranking.order[0][0], ranking.order[1][0]]
    assert ranking.interleaved() == [ranking.order[j][r] for r in range(3) for j in range(2)]
    assert ranking.text()[1].startswith("B 2 of 2: #")


def test_a_zero_direction_scores_zero_not_nan() -> None:
    a = embeddings(1, seed=1)
    scores = direction_similarity(a, a, embeddings(1, seed=2), embeddings(3, seed=3))
    assert torch.equal(scores, torch.zeros(3, dtype=torch.float64))


def test_ties_keep_the_batch_order() -> None:
    a, a_prime, b = embeddings(1, seed=1), embeddings(1, seed=2), embeddings(1, seed=3)
    same = embeddings(1, seed=5)
    ranking = rank_candidates(a, a_prime, b, torch.cat([same, same, same]))
    assert ranking.order == ((0, 1, 2),)


@pytest.mark.parametrize(
    ("n_a", "n_a_prime", "n_b", "count", "message"),
    [
        (1, 1, 1, 0, "b_prime: no candidates"),
        (1, 1, 2, 5, "b_prime: 5 candidates do not split over 2 images of B"),
        (3, 1, 2, 4, "a: got 3 images for 2 image(s) of B"),
        (1, 2, 3, 6, "a_prime: got 2 images for 3 image(s) of B"),
    ],
)
def test_bad_batches_are_refused_with_the_input_named(n_a, n_a_prime, n_b, count, message) -> None:
    with pytest.raises(RankingError, match=re.escape(message)):
        rank_candidates(embeddings(n_a), embeddings(n_a_prime), embeddings(n_b), embeddings(count))
