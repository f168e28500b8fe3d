"""The same three models as a diffusers ``UNet2DConditionModel`` (diffusers' random init):
plain ``AttnProcessor2_0`` vs. ``analogist_diffusers``' processors. Named so that it does
not shadow the real ``diffusers`` package on the scripts' path."""

from __future__ import annotations

import sys

from common import ROOT, VARIANTS, Result, Variant, measure


def diffusers_available() -> bool:
    try:
        import diffusers.models  # noqa: F401
    except ImportError:
        return False
    return True


def build_diffusers_unet(dtype, device: str):
    """Full-size SD1.5 inpainting UNet2DConditionModel (diffusers' own random init)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from diffusers import UNet2DConditionModel
    from support.diffusers_models import SD15_INPAINT_DIFFUSERS

    unet = UNet2DConditionModel(**SD15_INPAINT_DIFFUSERS).to(device=device).eval()
    if unet.dtype != dtype:
        unet = unet.to(dtype=dtype)
    assert unet.config.in_channels == 9 and unet.config.block_out_channels[0] == 320
    return unet


def run_grid_diffusers(args, unet, grid: int, memory, torch) -> list[Result]:
    """Plain (diffusers' AttnProcessor2_0: SDPA) vs our processors, one UNet call at batch 2."""
    from comfyui_analogist.analogist_diffusers import install_analogist, remove_analogist
    from comfyui_analogist.analogist_pixels.layout import make_layout
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    layout = make_layout(cell_width=grid // 2, cell_height=grid // 2)
    latent = grid // 8
    gen = torch.Generator().manual_seed(args.seed)
    dtype = unet.dtype
    sample = torch.randn(2, 9, latent, latent, generator=gen).to(
        args.device, dtype
    )  # latent + mask + masked image
    context = torch.randn(2, 77, 768, generator=gen).to(args.device, dtype)
    timestep = torch.tensor(500, device=args.device)

    def call():
        with torch.inference_mode():
            return unet(sample, timestep, encoder_hidden_states=context).sample

    installed = {}

    def setup_for(label, start, end):
        def setup():
            remove_analogist(unet)
            if start is not None:
                installed[label] = install_analogist(
                    unet, layout, sac_layers=(start, end), cam_layers=(start, end)
                )

        return setup

    def counts_for(label):
        def counts():
            calls = installed[label].calls()
            return f"SAC {sum(calls['sac'].values())}, CAM {sum(calls['cam'].values())}"

        return counts

    variants = []
    for label, start, end, time_target, memory_target in VARIANTS:
        variant = Variant(
            f"diffusers {label}",
            call,
            time_target,
            memory_target,
            setup=setup_for(label, start, end),
        )
        if start is not None:
            variant.counts = counts_for(label)
        variants.append(variant)
    try:
        return measure(args, variants, memory, torch)
    finally:
        remove_analogist(unet)
