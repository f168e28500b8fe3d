"""The DDIM steps replay the official MimicBrush run (goldens ``trace.safetensors``).

The trace holds the official pipeline's initial noise, both CFG branches' noise
predictions at each step and the latents after each step. Fed the recorded predictions
(CFG 5: u + 5 (c - u)), our schedule and step must land on the recorded latents. The
timesteps come from the trace and from our schedule, and must agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from comfyui_analogist.analogist_sampling.ddim import (
    abar_at,
    alphas_cumprod,
    ddim_sigmas,
    ddim_step,
    read_plan,
    sigmas_from_alphas_cumprod,
)

GOLDENS = Path(__file__).resolve().parents[1] / "goldens" / "mimicbrush"
PARAMS = json.loads((GOLDENS / "params.json").read_text())
GUIDANCE = PARAMS["guidance_scale"]  # 5.0 in the official run
TOLERANCE = 1e-4  # goldens README: per-step latents, absolute


@pytest.fixture(scope="module")
def trace() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(GOLDENS / "trace.safetensors"))


def test_schedule_gives_the_official_timesteps(trace):
    recorded = trace["timesteps"].tolist()
    abar = alphas_cumprod()
    sigma_max = float(sigmas_from_alphas_cumprod(abar)[-1])
    plan = read_plan(ddim_sigmas(len(recorded), 1.0, abar, sigma_max).tolist(), abar, True)
    assert list(plan.timesteps) == recorded
    assert plan.targets == tuple(recorded[1:]) + (0,)  # set_alpha_to_one=False: ends at abar[0]
    assert plan.from_pure_noise


def test_ddim_replay_reproduces_every_step_and_the_final_latents(trace):
    abar = alphas_cumprod()
    recorded = trace["timesteps"].tolist()
    sigma_max = float(sigmas_from_alphas_cumprod(abar)[-1])
    plan = read_plan(ddim_sigmas(len(recorded), 1.0, abar, sigma_max).tolist(), abar, True)
    x = trace["initial_noise"].clone()  # strength 1: x_T is the noise (init_noise_sigma 1)
    for i, (t, target) in enumerate(zip(plan.timesteps, plan.targets, strict=True)):
        u, c = trace[f"step{i}.noise_pred_uncond"], trace[f"step{i}.noise_pred_cond"]
        eps = u + GUIDANCE * (c - u)
        x, _ = ddim_step(eps, x, abar[t], abar_at(abar, target))
        error = (x - trace[f"step{i}.latents"]).abs().max().item()
        assert error <= TOLERANCE, f"step {i} (t={t}): max |diff| {error:.3g}"
    error = (x - trace["final_latents"]).abs().max().item()
    assert error <= TOLERANCE, f"final latents: max |diff| {error:.3g}"


def test_replay_fails_when_ending_at_a_clean_latent(trace):
    """The check can fail: ending at abar = 1 (ComfyUI's ddim, set_alpha_to_one=True) misses."""
    abar = alphas_cumprod()
    recorded = trace["timesteps"].tolist()
    x = trace["initial_noise"].clone()
    for i, t in enumerate(recorded):
        u, c = trace[f"step{i}.noise_pred_uncond"], trace[f"step{i}.noise_pred_cond"]
        target = recorded[i + 1] if i + 1 < len(recorded) else None
        x, _ = ddim_step(u + GUIDANCE * (c - u), x, abar[t], abar_at(abar, target))
    assert (x - trace["final_latents"]).abs().max().item() > 100 * TOLERANCE


def test_the_official_scheduler_is_the_one_implemented():
    """The run's scheduler config is diffusers' DDIM as analogist_sampling.ddim assumes it."""
    from comfyui_analogist.analogist_sampling import ddim

    config = PARAMS["scheduler"]
    assert config["class"] == "DDIMScheduler" and config["beta_schedule"] == "scaled_linear"
    assert (config["beta_start"], config["beta_end"]) == (ddim.BETA_START, ddim.BETA_END)
    assert config["num_train_timesteps"] == ddim.NUM_TRAIN_TIMESTEPS
    assert config["steps_offset"] == ddim.STEPS_OFFSET
    assert config["set_alpha_to_one"] is False and config["clip_sample"] is False
    assert PARAMS["eta"] == 0.0 and PARAMS["strength"] == 1.0
