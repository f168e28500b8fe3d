"""A random-weight SD1.5 ControlNet built with ComfyUI's own ``cldm.ControlNet`` class.

Saved in the original ``.pth``-style layout (keys ``control_model.*``), which
``comfy.controlnet.load_controlnet`` recognises by ``control_model.zero_convs.0.0.weight``
and configures from the weights' shapes. Same widths as SD1.5's UNet (its outputs are
added to the UNet's skip connections), 4 input channels (a ControlNet sees the noisy
latent, not the inpainting model's 9-channel input), a 3-channel hint (an image).
The zero convolutions get small random weights too, so the ControlNet changes the result.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .sd15 import SD15_INPAINT_UNET, cache_dir, randomize_

CONTROLNET_NAME = "random-sd15-controlnet.safetensors"


def controlnet_config() -> dict:
    config = {
        k: v
        for k, v in SD15_INPAINT_UNET.items()
        if k not in ("out_channels", "use_temporal_attention", "use_temporal_resblock")
    }
    config.update(in_channels=4, hint_channels=3)
    return config


def write_sd15_controlnet(path: Path, seed: int = 0, dtype: torch.dtype = torch.float16) -> Path:
    import safetensors.torch
    from comfy import ops
    from comfy.cldm.cldm import ControlNet

    net = ControlNet(
        **controlnet_config(), dtype=dtype, device="cpu", operations=ops.disable_weight_init
    )
    randomize_(net.to(dtype), seed)
    state = {f"control_model.{k}": v.contiguous() for k, v in net.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    safetensors.torch.save_file(state, str(partial))
    os.replace(partial, path)
    return path


def cached_sd15_controlnet(seed: int = 0) -> Path:
    path = cache_dir() / CONTROLNET_NAME.replace(".safetensors", f"-seed{seed}.safetensors")
    if not path.exists():
        write_sd15_controlnet(path, seed)
    return path
