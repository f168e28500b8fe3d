"""Random-weight diffusers models of SD1.5-inpainting's structure (no downloads).

``tiny_unet_config`` mirrors ``support.sd15.tiny_unet_config`` (ComfyUI's toy-width SD1.5
UNet): the same 16 transformer blocks, levels and head count, 9 input channels, so the
same weights can be moved between the two hosts with ComfyUI's own key conversion.
"""

from __future__ import annotations

from pathlib import Path

import torch

from support.sd15 import randomize_, tiny_unet_config

SD15_INPAINT_DIFFUSERS = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,  # diffusers' legacy name: SD1.5's 8 heads
    "norm_num_groups": 32,
}


def diffusers_unet_config(model_channels: int = 32, context_dim: int = 64) -> dict:
    """The diffusers config of ``support.sd15.tiny_unet_config(...)`` with the same widths.

    8 heads, as in SD1.5: ComfyUI's SD15 model class sets ``num_heads`` to 8 whatever the
    UNet config passed in says.
    """
    mult = tiny_unet_config(model_channels, context_dim)["channel_mult"]
    return {
        **SD15_INPAINT_DIFFUSERS,
        "sample_size": 16,
        "block_out_channels": tuple(model_channels * m for m in mult),
        "cross_attention_dim": context_dim,
    }


def tiny_unet(seed: int = 0, **widths) -> torch.nn.Module:
    """A random diffusers ``UNet2DConditionModel`` (fp32, eval) of SD1.5's structure."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(**diffusers_unet_config(**widths))
    return randomize_(unet, seed).eval()


def tiny_inpaint_pipeline(seed: int = 0, **widths):
    """A whole random ``StableDiffusionInpaintPipeline``: tiny UNet, VAE and CLIP text model.

    The tokenizer is SD1.5's own CLIP vocabulary, shipped inside ComfyUI
    (``comfy/sd1_tokenizer``), so nothing is downloaded.
    """
    import comfy.sd1_clip
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    config = diffusers_unet_config(**widths)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=128,
    )
    tokenizer_dir = Path(comfy.sd1_clip.__file__).with_name("sd1_tokenizer")
    tokenizer = CLIPTokenizer(
        str(tokenizer_dir / "vocab.json"), str(tokenizer_dir / "merges.txt"), model_max_length=77
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=config["cross_attention_dim"],
            intermediate_size=2 * config["cross_attention_dim"],
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionInpaintPipeline(
        vae=randomize_(vae, seed + 1).eval(),
        text_encoder=randomize_(text_encoder, seed + 2).eval(),
        tokenizer=tokenizer,
        unet=tiny_unet(seed, **widths),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe
