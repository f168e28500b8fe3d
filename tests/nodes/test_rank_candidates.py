"""AnalogistRankCandidates with a real (random-weight) ComfyUI CLIP vision model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_metrics.direction import RankingError
from comfyui_analogist.nodes import rank
from support.clip_vision import tiny_clip_vision
from support.grid_images import image, pattern

node = rank.AnalogistRankCandidates()


@pytest.fixture(scope="module")
def clip_vision(tmp_path_factory):
    return tiny_clip_vision(tmp_path_factory.mktemp("clip-vision"), seed=0)


def images(*seeds: int, width: int = 48, height: int = 40) -> torch.Tensor:
    return image(*(pattern(width, height, seed=s, square=4 + 3 * s) for s in seeds))


def embed_one(clip_vision, picture: torch.Tensor) -> np.ndarray:
    """ComfyUI's own encode_image on one image: the projected embedding, float64."""
    return clip_vision.encode_image(picture[None])["image_embeds"][0].detach().double().numpy()


def cos_naive(a, a_prime, b, b_prime) -> float:
    u, v = a_prime - a, b_prime - b
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def parse(lines: list[str]) -> list[list[tuple[int, float]]]:
    """'B 1 of 2: #3 0.4123, #1 0.2011' -> [[(3, 0.4123), (1, 0.2011)], ...]"""
    return [
        [(int(i), float(s)) for i, s in re.findall(r"#(\d+) (-?\d+\.\d+)", line)] for line in lines
    ]


def test_scores_equal_an_independent_computation_and_outputs_follow_them(clip_vision) -> None:
    a, a_prime, b = images(1), images(2), images(3)
    candidates = images(4, 5, 6, 7, 8)
    out = node.rank(clip_vision, a, a_prime, b, candidates, top_k=2)
    best, ordered, text = out["result"]

    e = {
        name: embed_one(clip_vision, t[0]) for name, t in (("a", a), ("a_prime", a_prime), ("b", b))
    }
    expected = [
        cos_naive(e["a"], e["a_prime"], e["b"], embed_one(clip_vision, c)) for c in candidates
    ]
    assert len(set(np.round(expected, 3))) == 5, "test images too alike to order"
    order = sorted(range(5), key=lambda i: -expected[i])

    (shown,) = parse(out["ui"]["text"])
    assert [i for i, _ in shown] == order
    np.testing.assert_allclose([s for _, s in shown], [expected[i] for i in order], atol=6e-5)
    assert text == "\n".join(out["ui"]["text"])
    assert torch.equal(ordered, candidates[order])
    assert torch.equal(best, candidates[order[:2]])


def test_several_b_rank_their_own_candidates(clip_vision) -> None:
    a, a_prime = images(1), images(2)
    b = images(3, 9)
    candidates = images(4, 5, 6, 7, 8, 10)  # candidate i belongs to B number i mod 2
    out = node.rank(clip_vision, a, a_prime, b, candidates, top_k=1)
    best, ordered, _ = out["result"]

    e_a, e_a_prime = embed_one(clip_vision, a[0]), embed_one(clip_vision, a_prime[0])
    shown = parse(out["ui"]["text"])
    expected_orders = []
    for j in range(2):
        members = [i for i in range(6) if i % 2 == j]
        score = {
            i: cos_naive(
                e_a, e_a_prime, embed_one(clip_vision, b[j]), embed_one(clip_vision, candidates[i])
            )
            for i in members
        }
        expected_orders.append(sorted(members, key=lambda i: -score[i]))
        assert [i for i, _ in shown[j]] == expected_orders[-1]
        np.testing.assert_allclose(
            [s for _, s in shown[j]], [score[i] for i in expected_orders[-1]], atol=6e-5
        )
    # One best per B, in B's order; then all, rank by rank.
    assert torch.equal(best, candidates[[expected_orders[0][0], expected_orders[1][0]]])
    interleaved = [expected_orders[j][r] for r in range(3) for j in range(2)]
    assert torch.equal(ordered, candidates[interleaved])


def test_top_k_beyond_the_candidates_gives_them_all(clip_vision) -> None:
    candidates = images(4, 5, 6)
    best, ordered, _ = node.rank(
        clip_vision, images(1), images(2), images(3), candidates, top_k=10
    )["result"]
    assert torch.equal(best, ordered) and best.shape[0] == 3


def test_no_candidates_is_refused(clip_vision) -> None:
    with pytest.raises(RankingError, match="b_prime: no candidates to rank"):
        node.rank(clip_vision, images(1), images(2), images(3), images(4)[:0])


def test_a_batch_that_does_not_split_over_b_is_refused(clip_vision) -> None:
    with pytest.raises(
        RankingError, match=re.escape("b_prime: 5 candidates do not split over 2 images of B")
    ):
        node.rank(clip_vision, images(1), images(2), images(3, 9), images(4, 5, 6, 7, 8))


def test_a_vision_model_without_image_embedding_is_refused(clip_vision) -> None:
    import comfy.clip_vision

    class HiddenStatesOnly:
        """A vision model like ComfyUI's, whose output has no projected embedding."""

        def encode_image(self, picture):
            full = clip_vision.encode_image(picture)
            out = comfy.clip_vision.Output()
            out["last_hidden_state"] = full["last_hidden_state"]
            return out

    with pytest.raises(
        RankingError, match="clip_vision: this vision model gives no image embedding"
    ):
        node.rank(HiddenStatesOnly(), images(1), images(2), images(3), images(4, 5))


def test_node_is_registered_with_a_tooltip_on_every_input_and_output() -> None:
    from comfyui_analogist import nodes

    assert nodes.NODE_CLASS_MAPPINGS["AnalogistRankCandidates"] is rank.AnalogistRankCandidates
    assert "AnalogistRankCandidates" in nodes.NODE_DISPLAY_NAME_MAPPINGS
    required = rank.AnalogistRankCandidates.INPUT_TYPES()["required"]
    assert list(required) == ["clip_vision", "a", "a_prime", "b", "b_prime", "top_k"]
    assert all(options.get("tooltip") for _, options in required.values())
    assert len(rank.AnalogistRankCandidates.OUTPUT_TOOLTIPS) == len(
        rank.AnalogistRankCandidates.RETURN_TYPES
    )
    assert rank.AnalogistRankCandidates.CATEGORY == "Analogist"
