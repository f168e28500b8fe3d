"""The diffusers-exact DDIM as a ComfyUI SAMPLER (imports ``comfy`` when used, not at import).

ComfyUI's custom-sampling nodes (SamplerCustom, SamplerCustomAdvanced) call
``sampler.sample(guider, sigmas, extra_args, callback, noise, latent_image, denoise_mask,
disable_pbar)`` with the raw noise, the latent already in the model's scaled space, and
expect the sampled latent back in that space. A ``comfy.samplers.Sampler`` subclass gets
the raw noise and the latent (a KSAMPLER only sees them already mixed), so it can start as
diffusers does and end where diffusers ends:

* start: strength 1 (ComfyUI's ``max_denoise`` mark, see ``ddim``) -> the noise itself;
  below -> ``add_noise(latent, noise, t_start)`` with diffusers' float32 alphas;
* each step: one call of ComfyUI's model wrapper (CFG, conds, patches, noise masks all
  ComfyUI's) at the timestep's sigma; the denoised x0 it returns gives eps =
  (x - x0) / sigma in ComfyUI's scaling; then diffusers' DDIM step in diffusers' scaling;
* end: the latent at ``alphas_cumprod[0]`` in diffusers' scaling, which is what diffusers
  decodes (ComfyUI's ``inverse_noise_scaling`` is the identity for eps/v models); with a
  latent noise mask, the kept region is the source latent itself.
"""

from __future__ import annotations

import torch

from .ddim import (
    NUM_TRAIN_TIMESTEPS,
    DDIMScheduleError,
    abar_at,
    add_noise,
    alphas_cumprod,
    ddim_step,
    read_plan,
    sigmas_from_alphas_cumprod,
)


def model_alphas_cumprod(model_sampling) -> torch.Tensor:
    """diffusers' float32 ``alphas_cumprod`` for the schedule the model itself declares.

    Reads ``linear_start``/``linear_end``/``num_timesteps`` from ComfyUI's
    ``ModelSamplingDiscrete`` and checks that the model's sigmas are that scaled-linear
    schedule (not cosine, zero-terminal-SNR or a custom beta list), which is what diffusers'
    DDIMScheduler(beta_schedule="scaled_linear") computes.
    """
    import comfy.model_sampling as ms

    name = type(model_sampling).__name__
    discrete = isinstance(model_sampling, ms.ModelSamplingDiscrete)
    eps_like = isinstance(model_sampling, ms.EPS) and not isinstance(
        model_sampling, tuple(getattr(ms, n) for n in ("EDM", "X0") if hasattr(ms, n))
    )
    if not discrete or not eps_like:
        raise DDIMScheduleError(
            f"model: diffusers' DDIM needs a model trained on the 1000-step DDPM schedule "
            f"(SD1.x, SD2.x, SDXL: eps or v prediction); this model samples with {name}. "
            f"Use ComfyUI's own samplers for it."
        )
    start = getattr(model_sampling, "linear_start", None)
    end = getattr(model_sampling, "linear_end", None)
    count = int(getattr(model_sampling, "num_timesteps", len(model_sampling.sigmas)))
    if (
        start is None
        or end is None
        or getattr(model_sampling, "zsnr", False)
        or count != NUM_TRAIN_TIMESTEPS
    ):
        raise DDIMScheduleError(
            f"model: its noise schedule is not the {NUM_TRAIN_TIMESTEPS}-step scaled-linear one "
            f"diffusers' DDIM uses (zero-terminal-SNR, {count} timesteps, or no linear_start/"
            f"linear_end). Use ComfyUI's own samplers."
        )
    abar = alphas_cumprod(count, float(start), float(end))
    theirs = model_sampling.sigmas.detach().float().cpu()
    ours = sigmas_from_alphas_cumprod(abar)
    if theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=1e-4, atol=0):
        raise DDIMScheduleError(
            f"model: its sigmas are not the scaled-linear schedule {start}..{end} (a cosine or "
            f"custom beta schedule, or a patched model_sampling): diffusers' DDIM would not "
            f"match it. Use ComfyUI's own samplers."
        )
    return abar


def _comfy():
    import comfy.model_management
    import comfy.samplers

    return comfy


def make_ddim_sampler():
    """A new ``comfy.samplers.Sampler`` running diffusers' DDIM (eta 0)."""
    comfy = _comfy()

    class DiffusersDDIMSampler(comfy.samplers.Sampler):
        """diffusers' DDIMScheduler (eta 0) over the timesteps a DDIM sigma list carries."""

        def sample(
            self,
            model_wrap,
            sigmas,
            extra_args,
            callback,
            noise,
            latent_image=None,
            denoise_mask=None,
            disable_pbar=False,
        ):
            return run_ddim(
                self, model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask
            )

    return DiffusersDDIMSampler()


@torch.no_grad()
def run_ddim(sampler, model_wrap, sigmas, extra_args, callback, noise, latent_image, denoise_mask):
    comfy = _comfy()
    model_sampling = model_wrap.inner_model.model_sampling
    abar = model_alphas_cumprod(model_sampling)
    plan = read_plan(sigmas.tolist(), abar, sampler.max_denoise(model_wrap, sigmas))
    table = sigmas_from_alphas_cumprod(abar)

    noise = noise.float()
    if latent_image is None:
        latent_image = torch.zeros_like(noise)
    latent_image = latent_image.to(noise)
    if plan.from_pure_noise:
        x = noise.clone()  # diffusers' inpaint pipeline at strength 1: init_noise_sigma 1
    else:
        x = add_noise(latent_image, noise, abar[plan.timesteps[0]])

    # ComfyUI's wrapper for the model call: applies a noise mask as every ComfyUI sampler
    # does (with the same noise), otherwise passes straight through to the guider.
    model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
    model_k.latent_image = latent_image
    model_k.noise = noise
    extra_args = dict(extra_args)
    extra_args["denoise_mask"] = denoise_mask
    s_in = x.new_ones([x.shape[0]])
    total = len(plan.timesteps)

    for i, (t, target) in enumerate(zip(plan.timesteps, plan.targets, strict=True)):
        comfy.model_management.throw_exception_if_processing_interrupted()
        sigma = table[t].to(x.device)
        abar_t = abar[t]
        scale = (1.0 + sigma.double() ** 2).sqrt().to(x.dtype)  # diffusers' x -> ComfyUI's
        x_comfy = x * scale
        denoised = model_k(x_comfy, sigma * s_in, **extra_args)
        eps = (x_comfy - denoised) / sigma
        x, pred_x0 = ddim_step(eps, x, abar_t, abar_at(abar, target))
        if callback is not None:
            callback(i, pred_x0, x, total)
    if denoise_mask is not None:
        # Where the mask keeps the source, end on the source itself, as diffusers' inpaint
        # pipeline does after its last step (the loop leaves it noised to abar[0] there).
        x = x * denoise_mask + latent_image * (1.0 - denoise_mask)
    return x
