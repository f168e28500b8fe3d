"""ComfyUI glue for the diffusers-exact DDIM: a SIGMAS node and a SAMPLER node.

The schedule and the step live in ``analogist_sampling.ddim``; the SAMPLER object in
``analogist_sampling.comfy_sampler``. Both plug into ComfyUI's SamplerCustom /
SamplerCustomAdvanced.
"""

from __future__ import annotations

from typing import Any

from ..analogist_sampling.comfy_sampler import make_ddim_sampler, model_alphas_cumprod
from ..analogist_sampling.ddim import ddim_sigmas

CATEGORY = "Analogist/sampling"


class AnalogistDDIMSigmas:
    """diffusers DDIMScheduler's timesteps for a step count and a strength, as SIGMAS."""

    DESCRIPTION = (
        "The timesteps of diffusers' DDIM scheduler (what the official MimicBrush and "
        "Analogist pipelines sample with: 50 steps, 'leading' spacing, steps_offset 1, last "
        "step to alphas_cumprod[0]) as SIGMAS for SamplerCustom / SamplerCustomAdvanced. "
        "Pair it with Analogist DDIM Sampler to get diffusers' numbers exactly. strength "
        "works as in diffusers' img2img/inpaint pipelines: 1 starts from pure noise, below 1 "
        "the latent is noised to the first kept timestep and int(steps * strength) steps run."
    )
    CATEGORY = CATEGORY
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS",)
    OUTPUT_TOOLTIPS = (
        "One sigma per step plus the final one (diffusers stops at alphas_cumprod[0], not at "
        "0). At strength 1 the list starts with the model's sigma_max, ComfyUI's mark for "
        "'start from pure noise': the DDIM sampler makes no model call for it.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (
                    "MODEL",
                    {
                        "tooltip": "The model to sample with; its noise schedule (SD1.x/SD2.x/"
                        "SDXL: scaled-linear 0.00085 to 0.012 over 1000 steps) is read from it."
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": 50,
                        "min": 1,
                        "max": 999,
                        "tooltip": "Number of DDIM steps of the full schedule (the official "
                        "pipelines use 50). With strength below 1 fewer are run.",
                    },
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "How much of the latent is replaced, as diffusers' "
                        "'strength': 1 ignores the input latent and starts from pure noise; "
                        "0.6 keeps the composition and runs int(steps * 0.6) steps.",
                    },
                ),
            }
        }

    def get_sigmas(self, model: Any, steps: int, strength: float) -> tuple:
        model_sampling = model.get_model_object("model_sampling")
        abar = model_alphas_cumprod(model_sampling)
        sigmas = ddim_sigmas(int(steps), float(strength), abar, float(model_sampling.sigma_max))
        return (sigmas,)


class AnalogistDDIMSampler:
    """diffusers' DDIMScheduler.step (eta 0) as a ComfyUI SAMPLER."""

    DESCRIPTION = (
        "diffusers' DDIM sampler (eta 0), exact: the same starting latent, steps and final "
        "latent as diffusers' DDIMScheduler, so results match the official MimicBrush and "
        "Analogist pipelines. Use it in SamplerCustom or SamplerCustomAdvanced with the "
        "SIGMAS of Analogist DDIM Sigmas. ComfyUI's own 'ddim' sampler with 'ddim_uniform' "
        "takes the same timesteps but starts and ends differently."
    )
    CATEGORY = CATEGORY
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)
    OUTPUT_TOOLTIPS = ("The sampler, for SamplerCustom / SamplerCustomAdvanced.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {"required": {}}

    def get_sampler(self) -> tuple:
        return (make_ddim_sampler(),)


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "AnalogistDDIMSigmas": AnalogistDDIMSigmas,
    "AnalogistDDIMSampler": AnalogistDDIMSampler,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "AnalogistDDIMSigmas": "Analogist DDIM Sigmas",
    "AnalogistDDIMSampler": "Analogist DDIM Sampler",
}
