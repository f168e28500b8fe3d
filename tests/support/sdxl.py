"""A random SDXL *inpainting* model at toy width, built with ComfyUI's own classes.

SDXL's real block structure (transformer depth 2 and 10 per level, 10 in the middle: 70
transformer blocks; none at the finest level), its real conditioning sizes (context 2048,
pooled + size embedding 2816) and the 9 input channels of the inpainting variant; only the
widths are small (model_channels 32, 16 channels per head), so a 128 x 128 latent (the
1024 px grid) runs on CPU.
"""

from __future__ import annotations

import torch

from .sd15 import random_model_patcher

CONTEXT_DIM = 2048
POOLED_DIM = 1280

# ComfyUI's detected SDXL UNet config (model_detection), widths reduced.
SDXL_INPAINT_UNET = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "num_classes": "sequential",
    "adm_in_channels": 2816,
    "in_channels": 9,
    "model_channels": 32,
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10,
    "use_linear_in_transformer": True,
    "context_dim": CONTEXT_DIM,
    "num_head_channels": 16,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}


def tiny_sdxl_inpaint_model_patcher(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A ``ModelPatcher`` around ComfyUI's SDXL model class (inpainting) with toy widths."""
    import comfy.supported_models

    return random_model_patcher(comfy.supported_models.SDXL(dict(SDXL_INPAINT_UNET)), seed, dtype)
