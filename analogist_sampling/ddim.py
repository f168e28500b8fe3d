"""diffusers' DDIMScheduler, its timesteps and its step, in plain torch (no ``comfy``).

What the official MimicBrush and Analogist pipelines run: ``DDIMScheduler`` with 1000
training steps, ``beta_schedule="scaled_linear"`` (0.00085 to 0.012), ``clip_sample=False``,
``set_alpha_to_one=False``, ``steps_offset=1``, "leading" spacing, eta 0.

ComfyUI's convention (``comfy.model_sampling.EPS``) keeps the latent as ``x0 + sigma * eps``
with ``sigma = sqrt((1 - abar) / abar)``; diffusers keeps ``sqrt(abar) * x0 +
sqrt(1 - abar) * eps``. The two differ by the factor ``sqrt(1 + sigma**2)``. The DDIM step
here works in diffusers' form on diffusers' own float32 ``alphas_cumprod``; sigmas are only
the labels that carry the timesteps through ComfyUI's SIGMAS.

The sigma list (``ddim_sigmas``):

* one sigma per denoising timestep, highest first, then the sigma of the step's target,
  ``alphas_cumprod[0]`` (``set_alpha_to_one=False``): ComfyUI's ``sigma_min``, not 0;
* at strength 1 it starts with one extra entry, the model's ``sigma_max``. That is
  ComfyUI's own mark for "start from pure noise" (``Sampler.max_denoise``); diffusers'
  inpaint pipeline starts a strength-1 run from the noise itself (``init_noise_sigma`` 1),
  and below strength 1 from ``add_noise(latent, noise, t_start)``, the two starts ComfyUI's
  ``noise_scaling`` also makes. The DDIM sampler drops that entry and makes no model call
  for it; other samplers simply take one step from ``sigma_max`` to the first timestep.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# diffusers' DDIMScheduler as the official pipelines configure it.
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 0.00085
BETA_END = 0.012
STEPS_OFFSET = 1

# A sigma matches a timestep of the schedule within this relative distance. Neighbouring
# timesteps differ by at least 5e-4 relative (at t = 999); ComfyUI's float64-derived
# sigmas differ from diffusers' float32 ones by about 1e-6.
GRID_RTOL = 1e-4


class DDIMScheduleError(ValueError):
    """A step count, strength or sigma list that diffusers' DDIM cannot run."""


def alphas_cumprod(
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    beta_start: float = BETA_START,
    beta_end: float = BETA_END,
) -> torch.Tensor:
    """diffusers' ``scaled_linear`` ``alphas_cumprod``, computed as it does: in float32.

    (ComfyUI's "linear" schedule is the same formula in float64; the two differ by about
    1e-6 relative, which is why the DDIM step reads these.)
    """
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32)
    betas = betas**2
    return torch.cumprod(1.0 - betas, dim=0)


def sigmas_from_alphas_cumprod(abar: torch.Tensor) -> torch.Tensor:
    """ComfyUI's sigma of each timestep: ``sqrt((1 - abar) / abar)``, float32."""
    abar = abar.double()
    return ((1.0 - abar) / abar).sqrt().float()


def leading_timesteps(
    steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS, steps_offset: int = STEPS_OFFSET
) -> list[int]:
    """``DDIMScheduler.set_timesteps`` with "leading" spacing: ``arange(steps) * (T // steps)``
    reversed, plus ``steps_offset`` (50 steps: 981, 961, ..., 1)."""
    if not isinstance(steps, int) or steps < 1:
        raise DDIMScheduleError(f"steps: must be a whole number of at least 1, got {steps!r}.")
    ratio = num_train_timesteps // steps
    top = (steps - 1) * ratio + steps_offset
    if steps > num_train_timesteps or top > num_train_timesteps - 1:
        raise DDIMScheduleError(
            f"steps: {steps} steps put the first timestep at {top}, past the model's last "
            f"timestep {num_train_timesteps - 1} (diffusers fails there too). Use at most "
            f"{num_train_timesteps - 1} steps."
        )
    return [i * ratio + steps_offset for i in range(steps - 1, -1, -1)]


def strength_timesteps(steps: int, strength: float) -> list[int]:
    """The timesteps diffusers' img2img/inpaint pipelines run for ``strength``.

    ``init_timestep = min(int(steps * strength), steps)``; the first ``steps -
    init_timestep`` timesteps of the ``steps``-step schedule are dropped.
    """
    if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0 or math.isnan(strength):
        raise DDIMScheduleError(f"strength: must be between 0 and 1, got {strength!r}.")
    timesteps = leading_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    kept = timesteps[t_start:]
    if not kept:
        least = 1.0 / steps
        raise DDIMScheduleError(
            f"strength: {strength} of {steps} steps leaves no step to run (diffusers keeps "
            f"int(steps * strength) = {init_timestep}). Raise strength to at least {least:.4g} "
            f"or raise steps."
        )
    return kept


@dataclass(frozen=True)
class DDIMPlan:
    """What a DDIM sigma list asks for, read back by the sampler.

    ``timesteps``: the timesteps of the model calls, highest first. ``targets``: after
    each call, the timestep the step goes to (``None`` means ``abar = 1``, a clean latent);
    the last one is 0 for diffusers' ``set_alpha_to_one=False``. ``from_pure_noise``: the
    run starts from the noise itself (strength 1), else from ``add_noise(latent, noise,
    timesteps[0])``.
    """

    timesteps: tuple[int, ...]
    targets: tuple[int | None, ...]
    from_pure_noise: bool


def ddim_sigmas(
    steps: int,
    strength: float,
    abar: torch.Tensor,
    sigma_max: float,
) -> torch.Tensor:
    """The SIGMAS for ``steps`` and ``strength`` (see the module docstring for the layout).

    ``abar`` is diffusers' ``alphas_cumprod``; ``sigma_max`` the model's own highest sigma
    (ComfyUI's ``model_sampling.sigma_max``), the start-from-noise mark at strength 1.
    """
    timesteps = strength_timesteps(steps, strength)
    table = sigmas_from_alphas_cumprod(abar)
    values = [float(table[t]) for t in timesteps] + [float(table[0])]
    if strength >= 1.0:
        values = [max(float(sigma_max), values[0])] + values
    return torch.tensor(values, dtype=torch.float32)


def nearest_timestep(sigma: float, table: torch.Tensor) -> int | None:
    """The timestep whose sigma is ``sigma`` (within GRID_RTOL); ``None`` for sigma 0."""
    if sigma == 0.0:
        return None
    index = int(torch.argmin((table.double().log() - math.log(sigma)).abs()))
    if not math.isclose(float(table[index]), sigma, rel_tol=GRID_RTOL):
        raise DDIMScheduleError(
            f"sigmas: {sigma:.6g} is not the sigma of any of the model's timesteps (nearest: "
            f"t={index}, sigma {float(table[index]):.6g}). The diffusers DDIM sampler only "
            f"runs on the timesteps of a DDIM schedule: give it the SIGMAS of Analogist DDIM "
            f"Sigmas (or ComfyUI's ddim_uniform scheduler)."
        )
    return index


def read_plan(sigmas: list[float], abar: torch.Tensor, starts_from_noise: bool) -> DDIMPlan:
    """Turn a sigma list back into timesteps. ``starts_from_noise``: ComfyUI's own test
    (``Sampler.max_denoise``: the first sigma is the model's sigma_max or above)."""
    table = sigmas_from_alphas_cumprod(abar)
    sigmas = [float(s) for s in sigmas]
    if starts_from_noise and len(sigmas) >= 3 and sigmas[1] <= sigmas[0]:
        sigmas = sigmas[1:]  # the start-from-noise mark, not a timestep
    else:
        starts_from_noise = False
    if len(sigmas) < 2:
        raise DDIMScheduleError(
            f"sigmas: {len(sigmas)} sigma(s) leave no step to run; a DDIM schedule has one "
            f"sigma per step and the final one."
        )
    steps = [nearest_timestep(s, table) for s in sigmas]
    if steps[0] is None:
        raise DDIMScheduleError("sigmas: the first sigma is 0, so there is nothing to denoise.")
    for current, target in zip(steps, steps[1:], strict=False):
        if current is None or (target is not None and target >= current):
            raise DDIMScheduleError(
                f"sigmas: the timesteps must decrease step by step (got {steps}); a sigma of 0 "
                f"may only come last. Use the SIGMAS of Analogist DDIM Sigmas unchanged."
            )
    return DDIMPlan(tuple(steps[:-1]), tuple(steps[1:]), starts_from_noise)  # type: ignore[arg-type]


def add_noise(latent: torch.Tensor, noise: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """``DDIMScheduler.add_noise`` at one timestep: ``sqrt(abar) * latent + sqrt(1 - abar) * noise``."""
    abar_t = abar_t.to(device=latent.device, dtype=latent.dtype)
    return abar_t**0.5 * latent + (1 - abar_t) ** 0.5 * noise


def ddim_step(
    eps: torch.Tensor, sample: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One eta-0 ``DDIMScheduler.step`` for an eps prediction: (previous sample, predicted x0).

    The same operations in the same order as diffusers, so the result matches it to the
    last bits, not just to rounding.
    """
    abar_t = abar_t.to(device=sample.device, dtype=sample.dtype)
    abar_prev = abar_prev.to(device=sample.device, dtype=sample.dtype)
    beta_prod_t = 1 - abar_t
    pred_x0 = (sample - beta_prod_t ** (0.5) * eps) / abar_t ** (0.5)
    direction = (1 - abar_prev - 0.0) ** (0.5) * eps
    return abar_prev ** (0.5) * pred_x0 + direction, pred_x0


def abar_at(abar: torch.Tensor, timestep: int | None) -> torch.Tensor:
    """``alphas_cumprod[t]``; 1 for ``None`` (a step to a clean latent)."""
    if timestep is None:
        return torch.tensor(1.0, dtype=abar.dtype)
    return abar[timestep]
