"""A random Flux.1 *Fill* model at toy size, built with ComfyUI's own Flux classes.

Flux.1's real structure (double-stream blocks, then single-stream blocks, joint attention
over [text; image] with rotary positions, 2x2 latent patches) and Fill's input: 16 latent +
16 masked-image latent + 64 mask channels (384 per patch); widths are tiny (hidden 32, two
heads of 16) so a model call runs on CPU in milliseconds. None on a host without Flux.
"""

from __future__ import annotations

import torch

from .sd15 import randomize_

TEXT_DIM = 32
POOLED_DIM = 32

FLUX_FILL_TINY = {
    "image_model": "flux",
    "in_channels": 96,
    "out_channels": 16,
    "vec_in_dim": POOLED_DIM,
    "context_in_dim": TEXT_DIM,
    "hidden_size": 32,
    "mlp_ratio": 2.0,
    "num_heads": 2,
    "depth": 2,
    "depth_single_blocks": 3,
    "axes_dim": [4, 6, 6],
    "theta": 10000,
    "patch_size": 2,
    "qkv_bias": True,
    "guidance_embed": True,
    "txt_ids_dims": [],
}


def host_has_flux() -> bool:
    import comfy.supported_models

    return hasattr(comfy.supported_models, "FluxInpaint")


def tiny_flux_fill_patcher(
    seed: int = 0,
    std: float = 0.1,
    config_class: str = "FluxInpaint",
    dtype: torch.dtype = torch.float32,
    **changes,
):
    """A ``ModelPatcher`` around ComfyUI's Flux model class (``model_base.Flux``), Fill's
    384 input channels, seeded random weights (larger than SD's 0.02 so the attention of a
    toy model is far from uniform and the edits show)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = getattr(comfy.supported_models, config_class)({**FLUX_FILL_TINY, **changes})
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device="cpu")
    randomize_(model.diffusion_model.to(dtype), seed, std)
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


def call_options(model, **extra) -> dict:
    """The model's transformer options as a sampler builds them (its wrappers merged in)."""
    import comfy.patcher_extension

    options = comfy.patcher_extension.copy_nested_dicts(
        model.model_options.get("transformer_options", {})
    )
    comfy.patcher_extension.merge_nested_dicts(
        options.setdefault("wrappers", {}), model.wrappers, copy_dict1=False
    )
    options.update(extra)
    return options


def flux_inputs(latent_h: int, latent_w: int, text: int = 9, batch: int = 2, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(batch, 16, latent_h, latent_w, generator=gen),
        "c_concat": torch.randn(batch, 80, latent_h, latent_w, generator=gen),
        "c_crossattn": torch.randn(batch, text, TEXT_DIM, generator=gen),
        "y": torch.randn(batch, POOLED_DIM, generator=gen),
        "guidance": torch.full((batch,), 30.0),
    }


def flux_call(model, inputs: dict, sigma: float = 0.8, cond_or_uncond=(0, 1)) -> torch.Tensor:
    """One model call (batch = cond + uncond by default), as the sampler makes it."""
    batch = inputs["x"].shape[0]
    sigmas = torch.full((batch,), sigma)
    options = call_options(model, cond_or_uncond=list(cond_or_uncond), sigmas=sigmas)
    with torch.no_grad():
        return model.model.apply_model(
            inputs["x"],
            sigmas,
            c_concat=inputs["c_concat"],
            c_crossattn=inputs["c_crossattn"],
            y=inputs["y"],
            guidance=inputs["guidance"],
            transformer_options=options,
        )
