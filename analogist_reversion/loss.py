"""ReVersion's training loss: denoising plus relation steering, as one function.

``relation_loss`` is what the trainer calls for every micro-batch, so a test can feed it
recorded latents, noise, timesteps and ids and compare every term.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .schedule import add_noise
from .text import PromptTokens, encode


@dataclass(frozen=True)
class ModelParts:
    """The frozen model pieces the loss reads.

    * ``text_model``: the CLIP text transformer (ComfyUI's ``CLIPTextModel_``);
    * ``unet``: ``unet(z_t, t, context) -> eps prediction`` (float32 out);
    * ``alphas_cumprod``: float32 abar_t, t = 0..999;
    * ``tokens``: the prompt tokenizer (placeholder id, stop ids).
    """

    text_model: Any  # ComfyUI's CLIP text transformer (embeddings.token_embedding)
    unet: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    alphas_cumprod: torch.Tensor
    tokens: PromptTokens

    @property
    def token_table(self) -> torch.Tensor:
        return self.text_model.embeddings.token_embedding.weight


@dataclass(frozen=True)
class LossWeights:
    denoise: float = 1.0
    steer: float = 0.01
    temperature: float = 0.07


@dataclass
class LossTerms:
    """One micro-batch's losses (0-d tensors; ``total`` carries the graph to ``r``)."""

    total: torch.Tensor
    denoise: torch.Tensor
    steer: torch.Tensor
    model_pred: torch.Tensor
    context: torch.Tensor


def steer_loss(
    anchor: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Multi-positive InfoNCE on cosine similarity: logsumexp(all) - logsumexp(positives).

    ``anchor`` (D,) carries the gradient; ``positives`` (P, D) and ``negatives`` (N, D) are
    detached. Similarities are cos / temperature.
    """
    a = torch.nn.functional.normalize(anchor.float(), dim=-1)
    pos = torch.nn.functional.normalize(positives.detach().float(), dim=-1)
    neg = torch.nn.functional.normalize(negatives.detach().float(), dim=-1)
    logits_pos = pos @ a / temperature
    logits_all = torch.cat([logits_pos, neg @ a / temperature])
    return torch.logsumexp(logits_all, 0) - torch.logsumexp(logits_pos, 0)


def relation_loss(
    parts: ModelParts,
    r: torch.Tensor,
    latents: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    input_ids: torch.Tensor,
    positive_ids: torch.Tensor,
    weights: LossWeights = LossWeights(),
) -> LossTerms:
    """L = w_d mean((U(z_t, t, c) - eps)^2) + w_s L_steer for one micro-batch.

    ``latents`` are scaled VAE samples (B, 4, h, w); ``input_ids`` (B, 77) hold the
    placeholder id where ``<R>`` goes; ``positive_ids`` (B, 77) are the sampled prepositions,
    one padded row per item. ``r`` is the trainable ``<R>`` row (float32).
    """
    tokens = parts.tokens
    device = latents.device
    context = encode(parts.text_model, input_ids, r, tokens.placeholder_id)
    noisy = add_noise(latents, noise, timesteps, parts.alphas_cumprod)
    model_pred = parts.unet(noisy, timesteps.to(device), context).float()
    denoise = torch.nn.functional.mse_loss(model_pred, noise.float(), reduction="mean")

    if weights.steer:
        table = parts.token_table
        pos_ids = tokens.positive_ids_used(positive_ids).to(table.device)
        neg_ids = tokens.negative_ids(input_ids).to(table.device)
        steer = steer_loss(r, table[pos_ids], table[neg_ids], weights.temperature).to(device)
    else:
        steer = torch.zeros((), device=device)
    total = weights.denoise * denoise + weights.steer * steer
    return LossTerms(
        total=total, denoise=denoise, steer=steer, model_pred=model_pred, context=context
    )
