"""Which timesteps ReVersion trains on, and SD1's noise schedule for noising latents."""

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


def sd1_alphas_cumprod(
    beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = NUM_TRAIN_TIMESTEPS
) -> torch.Tensor:
    """abar_t of SD1's scaled-linear betas, computed in float32 as the training code does."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor):
    """z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, per batch item."""
    abar = alphas_cumprod.to(device=x0.device)[t.to(x0.device)].to(x0.dtype)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    return (abar**0.5).reshape(shape) * x0 + ((1.0 - abar) ** 0.5).reshape(shape) * noise
