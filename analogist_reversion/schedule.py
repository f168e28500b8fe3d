"""Which timesteps ReVersion trains on, and noising latents with SD1's schedule
(``analogist_sampling.ddim.alphas_cumprod``, diffusers' float32 scaled-linear table)."""

from __future__ import annotations

import math

import torch

NUM_TRAIN_TIMESTEPS = 1000


def importance_distribution(alpha: float = 0.5, steps: int = NUM_TRAIN_TIMESTEPS) -> torch.Tensor:
    """Relation-focal importance sampling: p(t) = f(t) / sum(f), f(t) = (1 - alpha cos(pi t / T)) / T.

    float64, t = 0..T-1. High t (much noise, where layout and relations form) is drawn up to
    (1 + alpha) / (1 - alpha) times as often as low t; alpha = 0 gives the uniform distribution.
    """
    t = torch.arange(steps, dtype=torch.float64)
    f = (1.0 - alpha * torch.cos(math.pi * t / steps)) / steps
    return f / f.sum()


def sample_timesteps(p: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` timesteps (int64) drawn independently from the distribution ``p``."""
    return torch.multinomial(p, count, replacement=True, generator=generator)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor):
    """z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, per batch item."""
    abar = alphas_cumprod.to(device=x0.device)[t.to(x0.device)].to(x0.dtype)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return (abar**0.5).reshape(shape) * x0 + ((1.0 - abar) ** 0.5).reshape(shape) * noise
