"""The SD1.5-inpainting UNet through ComfyUI (issue 3; K example pairs, issue 12): plain
vs. SAC+CAM on the paper's layers and on all 16 blocks, one call at batch 2."""

from __future__ import annotations

import sys
from collections.abc import Callable

from common import ROOT, VARIANTS, Result, Variant, measure, patched


def build_model(seed: int, dtype, device: str):
    """Full-size SD1.5 inpainting (9-channel UNet) with random weights, in a ModelPatcher."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.sd15 import SD15_INPAINT_UNET, tiny_inpaint_model_patcher

    # The "tiny" builder at SD1.5's own widths is the full model: same config, same code.
    model = tiny_inpaint_model_patcher(
        seed,
        dtype,
        model_channels=SD15_INPAINT_UNET["model_channels"],
        context_dim=SD15_INPAINT_UNET["context_dim"],
        heads=SD15_INPAINT_UNET["num_heads"],
    )
    unet = model.model.diffusion_model
    assert unet.model_channels == 320 and unet.in_channels == 9, (
        "not the full SD1.5 inpainting UNet"
    )
    model.model.to(device)  # the clones below share this BaseModel
    return model


def unet_caller(
    model, grid: int, seed: int, device: str, height: int | None = None
) -> Callable[[], object]:
    """One CFG-style UNet evaluation (cond + uncond at batch 2) with the model's patches.

    ``grid`` is the width in px; ``height`` (default: square) is taller with K > 1 pairs."""
    import torch

    latent = grid // 8
    latent_h = (height or grid) // 8
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, latent_h, latent, generator=gen).to(device)
    concat = torch.randn(2, 5, latent_h, latent, generator=gen).to(device)  # mask + masked image
    context = torch.randn(2, 77, 768, generator=gen).to(device)
    sampling = model.get_model_object("model_sampling")
    sigma = torch.full((2,), sampling.percent_to_sigma(0.5), device=device)
    options = {
        **model.model_options["transformer_options"],
        "cond_or_uncond": [0, 1],
        "sigmas": sigma,
    }

    def call():
        with torch.inference_mode():
            return model.model.apply_model(
                x, sigma, c_concat=concat, c_crossattn=context, transformer_options=options
            )

    return call


def patch_call_counts(model) -> str:
    """How often our SAC and CAM patches applied their edit (proves they fired)."""
    counts = {"sac": 0, "cam": 0}
    for patch in _our_patches(model):
        counts[patch.analogist_kind] += sum(patch.calls.values())
    return f"SAC {counts['sac']}, CAM {counts['cam']}"


def run_grid(args, base, grid: int, memory, torch, pairs: int = 1) -> list[Result]:
    from comfyui_analogist.analogist_pixels.layout import make_layout

    layout = make_layout(cell_width=grid // 2, cell_height=grid // 2, pairs=pairs)
    variants = []
    for label, start, end, time_target, memory_target in VARIANTS:
        if args.paper_layers_only and start == 0:
            continue
        model = base if start is None else patched(base, layout, start, end)
        call = unet_caller(model, layout.grid_width, args.seed, args.device, layout.grid_height)
        variant = Variant(label, call, time_target, memory_target)
        if start is not None:
            variant.reset_counts = lambda model=model: [
                p.calls.clear() for p in _our_patches(model)
            ]
            variant.counts = lambda model=model: patch_call_counts(model)
        variants.append(variant)
    return measure(args, variants, memory, torch)


def _our_patches(model):
    """SAC sits in the attn1 replace slots, CAM among the attn2 output patches."""
    options = model.model_options["transformer_options"]
    candidates = [p for slot in options.get("patches_replace", {}).values() for p in slot.values()]
    candidates += [p for patches in options.get("patches", {}).values() for p in patches]
    seen = {}
    for patch in candidates:
        if getattr(patch, "analogist_kind", None) in ("sac", "cam"):
            seen[id(patch)] = patch
    return seen.values()
