"""ComfyUI glue for ranking B' candidates by the paper's CLIP direction similarity.

The score and the sorting live in ``analogist_metrics.direction``; this node only encodes the
images with the CLIP vision model it is given and passes the embeddings on.
"""

from __future__ import annotations

from typing import Any

import torch

from ..analogist_metrics.direction import Ranking, RankingError, check_batches, rank_candidates
from ..analogist_pixels.grid import check_image

CATEGORY = "Analogist"
ENCODE_CHUNK = 16  # images per encoder call: bounds memory for large candidate batches


def image_embeddings(clip_vision: Any, images: torch.Tensor, what: str) -> torch.Tensor:
    """CLIP's projected image embeddings ``[batch, dim]`` of ``images`` ([B, H, W, C]).

    ``clip_vision`` is ComfyUI's CLIP_VISION (``comfy.clip_vision.ClipVisionModel``); its
    ``encode_image`` resizes and centre-crops to the model's input size, as CLIP does.
    """
    encode = getattr(clip_vision, "encode_image", None)
    if encode is None:
        raise RankingError(
            f"clip_vision: expected a CLIP vision model from Load CLIP Vision, got "
            f"{type(clip_vision).__name__}."
        )
    parts = []
    for start in range(0, images.shape[0], ENCODE_CHUNK):
        output = encode(images[start : start + ENCODE_CHUNK, :, :, :3])
        try:
            embeds = output["image_embeds"]
        except (AttributeError, KeyError, TypeError):
            embeds = None
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2:
            raise RankingError(
                "clip_vision: this vision model gives no image embedding (image_embeds), so "
                "there is nothing to compare. Load a CLIP vision model with a projection, e.g. "
                "CLIP-ViT-L/14 or CLIP-ViT-H/14 (the IPAdapter image encoders), with Load CLIP "
                "Vision."
            )
        if not bool(torch.isfinite(embeds).all()):
            raise RankingError(
                f"{what}: the CLIP vision model gave NaN or infinite embeddings for these "
                "images (a model run in float16 overflowing?): no score would mean anything. "
                "Load the CLIP vision model in float32."
            )
        parts.append(embeds.float().cpu())
    return torch.cat(parts)


class AnalogistRankCandidates:
    """Sort generated B' candidates by the paper's metric and keep the best."""

    DESCRIPTION = (
        "Ranks B' candidates by the paper's CLIP direction similarity: score = "
        "cos(E(A') - E(A), E(B') - E(B)), E the CLIP vision model's image embedding, i.e. how "
        "well B -> B' follows the change A -> A'. Higher is better (at most 1). Sample several "
        "B' (KSampler batch size 4, then Grid Crop) and keep the best here. With N images of "
        "B, candidate i belongs to B number i mod N (as in Grid Crop) and each B's candidates "
        "are ranked on their own; outputs keep that order, best first. Broken images (NaN, "
        "0..255 or -1..1 pixels) are refused, not ranked; A' identical to A is an error (no "
        "direction to compare with); a candidate identical to its B scores 0, marked "
        "'(same as B)'."
    )
    CATEGORY = CATEGORY
    FUNCTION = "rank"
    RETURN_TYPES = ("IMAGE", "IMAGE", "STRING")
    RETURN_NAMES = ("best", "sorted", "scores")
    OUTPUT_TOOLTIPS = (
        "The top_k candidates of each B, best first (with several B: every B's best, then "
        "every B's second, ...).",
        "All candidates, best first, in the same order.",
        "The scores as text, one line per B: '#batch index score', best first. Also shown "
        "on the node after a run.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "clip_vision": (
                    "CLIP_VISION",
                    {
                        "tooltip": "A CLIP vision model from Load CLIP Vision, e.g. the "
                        "CLIP-ViT-H/14 or -L/14 image encoder IPAdapter uses (the paper scores "
                        "with ViT-B/16, which Load CLIP Vision does not take). It only scores: "
                        "it does not change the images."
                    },
                ),
                "a": (
                    "IMAGE",
                    {"tooltip": "A: the example before the change (1 image, or one per B)."},
                ),
                "a_prime": (
                    "IMAGE",
                    {"tooltip": "A': the example after the change (1 image, or one per B)."},
                ),
                "b": (
                    "IMAGE",
                    {
                        "tooltip": "B: the image(s) the candidates were made from, as given to Grid Compose."
                    },
                ),
                "b_prime": (
                    "IMAGE",
                    {
                        "tooltip": "The B' candidates to rank: a batch, e.g. Grid Crop's b_prime "
                        "after a KSampler with batch size 4. With N images of B, candidate i "
                        "belongs to B number i mod N; the count must be a multiple of N."
                    },
                ),
                "top_k": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": 4096,
                        "step": 1,
                        "tooltip": "How many of the best candidates of each B go to the 'best' "
                        "output (at most the number of candidates per B).",
                    },
                ),
            }
        }

    def rank(
        self,
        clip_vision: Any,
        a: torch.Tensor,
        a_prime: torch.Tensor,
        b: torch.Tensor,
        b_prime: torch.Tensor,
        top_k: int = 1,
    ) -> dict[str, Any]:
        images = {"a": a, "a_prime": a_prime, "b": b, "b_prime": b_prime}
        for what, image in images.items():
            if not isinstance(image, torch.Tensor) or image.ndim != 4:
                raise RankingError(
                    f"{what}: expected an IMAGE batch [batch, height, width, channels], got "
                    f"{getattr(image, 'shape', type(image).__name__)}."
                )
        check_batches(a.shape[0], a_prime.shape[0], b.shape[0], b_prime.shape[0])
        for what, image in images.items():  # NaN, 0..255 or -1..1 pixels: refused, not ranked
            try:
                check_image(image, what)
            except (TypeError, ValueError) as exc:
                raise RankingError(str(exc)) from None
        with torch.no_grad():
            ranking: Ranking = rank_candidates(
                image_embeddings(clip_vision, a, "a"),
                image_embeddings(clip_vision, a_prime, "a_prime"),
                image_embeddings(clip_vision, b, "b"),
                image_embeddings(clip_vision, b_prime, "b_prime"),
            )
        best = b_prime[ranking.interleaved(int(top_k))]
        ordered = b_prime[ranking.interleaved()]
        lines = ranking.text()
        text = "\n".join(lines)
        return {"ui": {"text": lines}, "result": (best, ordered, text)}


NODE_CLASS_MAPPINGS: dict[str, type] = {"AnalogistRankCandidates": AnalogistRankCandidates}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "AnalogistRankCandidates": "Analogist Rank Candidates",
}
