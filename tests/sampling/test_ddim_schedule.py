"""The schedule and the step against diffusers' DDIMScheduler itself, and the refusals."""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_sampling.ddim import (
    DDIMScheduleError,
    add_noise,
    alphas_cumprod,
    ddim_sigmas,
    ddim_step,
    leading_timesteps,
    read_plan,
    sigmas_from_alphas_cumprod,
    strength_timesteps,
)

pytest.importorskip("diffusers", reason="diffusers (tests/requirements-test.txt) is not installed")


def official_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


ABAR = alphas_cumprod()
SIGMA_MAX = float(sigmas_from_alphas_cumprod(ABAR)[-1])


def test_alphas_cumprod_are_diffusers_bit_for_bit():
    assert torch.equal(ABAR, official_scheduler().alphas_cumprod)


def test_leading_timesteps_match_set_timesteps_for_every_step_count():
    scheduler = official_scheduler()
    for steps in range(1, 1000):
        scheduler.set_timesteps(steps)
        assert leading_timesteps(steps) == scheduler.timesteps.tolist(), steps


@pytest.mark.parametrize("steps", [1, 3, 10, 25, 50, 100])
def test_strength_drops_the_first_timesteps_as_the_pipelines_do(steps):
    scheduler = official_scheduler()
    scheduler.set_timesteps(steps)
    for strength in [i / 100 for i in range(0, 101)]:
        init_timestep = min(int(steps * strength), steps)
        expected = scheduler.timesteps[max(steps - init_timestep, 0) :].tolist()
        if not expected:
            with pytest.raises(DDIMScheduleError, match="strength"):
                strength_timesteps(steps, strength)
        else:
            assert strength_timesteps(steps, strength) == expected, (steps, strength)


def test_ddim_step_and_add_noise_are_diffusers_bit_for_bit():
    scheduler = official_scheduler()
    scheduler.set_timesteps(50)
    gen = torch.Generator().manual_seed(0)
    sample, eps, latent = (torch.randn(2, 4, 8, 8, generator=gen) for _ in range(3))
    timesteps = scheduler.timesteps.tolist()
    for t, target in zip(timesteps, timesteps[1:] + [0], strict=True):
        ours, x0 = ddim_step(eps, sample, ABAR[t], ABAR[target])
        theirs = scheduler.step(eps, t, sample)
        assert torch.equal(ours, theirs.prev_sample) and torch.equal(
            x0, theirs.pred_original_sample
        )
    t = timesteps[10]
    theirs = scheduler.add_noise(latent, eps, torch.tensor([t]))
    assert torch.equal(add_noise(latent, eps, ABAR[t]), theirs)


def test_sigma_list_round_trips_to_the_timesteps():
    for steps, strength in [(50, 1.0), (50, 0.98), (500, 1.0), (7, 0.5), (1, 1.0)]:
        sigmas = ddim_sigmas(steps, strength, ABAR, SIGMA_MAX)
        plan = read_plan(sigmas.tolist(), ABAR, starts_from_noise=sigmas[0] >= SIGMA_MAX)
        assert list(plan.timesteps) == strength_timesteps(steps, strength)
        assert plan.targets[-1] == 0  # set_alpha_to_one=False: the last step goes to abar[0]
        assert plan.from_pure_noise == (strength == 1.0)
        assert len(sigmas) == len(plan.timesteps) + 1 + (strength == 1.0)


def test_comfyui_ddim_uniform_is_read_as_a_step_to_a_clean_latent():
    """ComfyUI's ddim_uniform ends at sigma 0: diffusers' set_alpha_to_one=True."""
    table = sigmas_from_alphas_cumprod(ABAR)
    plan = read_plan([float(table[t]) for t in (667, 334, 1)] + [0.0], ABAR, False)
    assert plan.timesteps == (667, 334, 1) and plan.targets == (334, 1, None)


@pytest.mark.parametrize(
    ("sigmas", "match"),
    [
        ([5.0, 0.0292], "not the sigma of any"),
        ([-1.0, 1.0], "must decrease"),
        ([1.0], "leave no step"),
        ([0.0, 0.0], "first sigma is 0"),
    ],
)
def test_bad_sigma_lists_are_refused(sigmas, match):
    table = sigmas_from_alphas_cumprod(ABAR)
    # 1.0 stands for the sigma of t=500, -1.0 for that of t=0
    named = {1.0: float(table[500]), -1.0: float(table[0])}
    sigmas = [named.get(s, s) for s in sigmas]
    with pytest.raises(DDIMScheduleError, match=match):
        read_plan(sigmas, ABAR, False)


def test_bad_steps_and_strength_are_refused():
    with pytest.raises(DDIMScheduleError, match="steps"):
        leading_timesteps(1000)
    with pytest.raises(DDIMScheduleError, match="steps"):
        leading_timesteps(0)
    with pytest.raises(DDIMScheduleError, match="strength"):
        strength_timesteps(50, 1.5)
    with pytest.raises(DDIMScheduleError, match="at least 0.02"):
        strength_timesteps(50, 0.01)


def test_models_on_other_schedules_are_refused():
    """Real ComfyUI model_sampling objects: cosine betas and flow matching are not DDIM's."""
    import comfy.model_sampling as ms
    from comfyui_analogist.analogist_sampling.comfy_sampler import model_alphas_cumprod

    class Discrete(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    assert torch.equal(model_alphas_cumprod(Discrete()), ABAR)
    cosine = Discrete()
    cosine._register_schedule(beta_schedule="cosine")
    with pytest.raises(DDIMScheduleError, match="not the scaled-linear"):
        model_alphas_cumprod(cosine)
    if hasattr(ms, "ModelSamplingDiscreteFlow") and hasattr(ms, "CONST"):

        class Flow(ms.ModelSamplingDiscreteFlow, ms.CONST):
            pass

        with pytest.raises(DDIMScheduleError, match="1000-step DDPM"):
            model_alphas_cumprod(Flow())
