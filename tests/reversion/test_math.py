"""p(t) and the steering loss against naive, obviously correct float64 definitions."""

from __future__ import annotations

import math
import random

import pytest
import torch
from comfyui_analogist.analogist_reversion.loss import steer_loss
from comfyui_analogist.analogist_reversion.schedule import (
    add_noise,
    importance_distribution,
    sample_timesteps,
)
from comfyui_analogist.analogist_sampling.ddim import alphas_cumprod


def naive_p(alpha, steps=1000):
    f = [(1 - alpha * math.cos(math.pi * t / steps)) / steps for t in range(steps)]
    total = math.fsum(f)
    return [x / total for x in f]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9])
def test_importance_distribution_is_the_normalised_scaled_cosine(alpha):
    p = importance_distribution(alpha)
    naive = torch.tensor(naive_p(alpha), dtype=torch.float64)
    assert float((p - naive).abs().max()) <= 1e-15
    assert abs(float(p.sum()) - 1.0) <= 1e-12


def test_high_noise_steps_are_drawn_up_to_three_times_as_often():
    p = importance_distribution(0.5)
    assert float(p[-1] / p[0]) == pytest.approx(3.0, rel=1e-4)
    counts = torch.bincount(
        sample_timesteps(p, 200_000, torch.Generator().manual_seed(0)), minlength=1000
    )
    late, early = counts[900:].sum().item(), counts[:100].sum().item()
    assert 2.6 < late / early < 3.2


def naive_steer(anchor, positives, negatives, tau):
    def unit(v):
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    a = unit(anchor)

    def sims(rows):
        return [sum(x * y for x, y in zip(a, unit(row), strict=True)) / tau for row in rows]

    pos, neg = sims(positives), sims(negatives)
    return math.log(sum(math.exp(s) for s in pos + neg)) - math.log(sum(math.exp(s) for s in pos))


def test_steer_loss_equals_the_naive_multi_positive_infonce():
    gen = torch.Generator().manual_seed(3)
    for trial in range(5):
        anchor = torch.randn(16, generator=gen)
        pos = torch.randn(3 + trial, 16, generator=gen)
        neg = torch.randn(2 + 2 * trial, 16, generator=gen)
        got = steer_loss(anchor, pos, neg, 0.07)
        want = naive_steer(anchor.tolist(), pos.tolist(), neg.tolist(), 0.07)
        assert float(got) == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_steer_loss_gradient_reaches_only_the_anchor_and_matches_float64():
    gen = torch.Generator().manual_seed(4)
    anchor = torch.randn(8, generator=gen, dtype=torch.float64, requires_grad=True)
    pos = torch.randn(4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    neg = torch.randn(6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    a32 = anchor.detach().float().requires_grad_(True)
    steer_loss(a32, pos.float(), neg.float(), 0.07).backward()
    # float64 reference written out by hand
    a = anchor / anchor.norm()
    logits = (
        torch.cat([pos.detach(), neg.detach()])
        / torch.cat([pos, neg]).detach().norm(dim=1, keepdim=True)
        @ a
        / 0.07
    )
    ref = torch.logsumexp(logits, 0) - torch.logsumexp(logits[:4], 0)
    ref.backward()
    assert torch.allclose(a32.grad.double(), anchor.grad, rtol=1e-4, atol=1e-6)
    assert pos.grad is None and neg.grad is None


def test_steer_loss_is_small_when_the_anchor_is_a_positive_and_large_when_a_negative():
    gen = torch.Generator().manual_seed(5)
    pos, neg = torch.randn(4, 32, generator=gen), torch.randn(6, 32, generator=gen)
    assert float(steer_loss(pos[0], pos, neg, 0.07)) < 0.05
    assert float(steer_loss(neg[0], pos, neg, 0.07)) > 5.0


def test_add_noise_is_the_ddpm_forward_process_with_sd1_betas():
    abar = alphas_cumprod()
    betas = [
        (math.sqrt(0.00085) + (math.sqrt(0.012) - math.sqrt(0.00085)) * i / 999) ** 2
        for i in range(1000)
    ]
    prod, naive = 1.0, []
    for b in betas:
        prod *= 1 - b
        naive.append(prod)
    assert torch.allclose(abar.double(), torch.tensor(naive, dtype=torch.float64), rtol=1e-5)
    x0, eps = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    t = torch.tensor([random.Random(0).randrange(1000), 999])
    z = add_noise(x0, eps, t, abar)
    for i in range(2):
        a = float(abar[t[i]])
        assert torch.allclose(z[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * eps[i], atol=1e-6)
