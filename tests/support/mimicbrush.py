"""MimicBrush's tiny golden weights, rebuilt from the manifest and written as official files.

The goldens (``tests/goldens/mimicbrush``, copied from the official run) list every tensor
with a fill rule and a seed; rebuilding them is bit-exact (sha256 per state dict).
``write_official_files`` saves them the way the official release ships them: one
``mimicbrush.bin`` (``torch.save`` of a dict of five state dicts) and
``depth_anything_vitb14.pth``; the VAE as a diffusers state dict for ComfyUI's converter.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import torch

GOLDENS = Path(__file__).resolve().parents[1] / "goldens" / "mimicbrush"


def manifest() -> dict:
    return json.loads((GOLDENS / "manifest.json").read_text())


def params() -> dict:
    return json.loads((GOLDENS / "params.json").read_text())


def component(name: str) -> dict:
    return next(c for c in manifest()["components"] if c["name"] == name)


def rebuild(comp: dict) -> dict[str, torch.Tensor]:
    gen = torch.Generator(device="cpu").manual_seed(comp["seed"])
    sd: dict[str, torch.Tensor] = {}
    for key, shape, fill in comp["tensors"]:
        if fill == "randn":
            sd[key] = (torch.randn(shape, generator=gen, dtype=torch.float64) * comp["std"]).float()
        elif fill == "ones":
            sd[key] = torch.ones(shape, dtype=torch.float32)
        elif fill == "zeros":
            sd[key] = torch.zeros(shape, dtype=torch.float32)
        else:
            sd[key] = torch.full(shape, float(fill["const"]), dtype=torch.float32)
    return sd


def digest(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key, t in sd.items():
        h.update(key.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@cache
def state_dicts() -> dict[str, dict[str, torch.Tensor]]:
    return {c["name"]: rebuild(c) for c in manifest()["components"]}


def unet_heads() -> int:
    """The tiny UNets' head count (diffusers' ``attention_head_dim`` in SD1 naming)."""
    return int(component("mimicbrush.unet")["config"]["attention_head_dim"])


def mimicbrush_parts() -> dict[str, dict[str, torch.Tensor]]:
    sds = state_dicts()
    return {
        p: sds[f"mimicbrush.{p}"]
        for p in ("unet", "referencenet", "image_encoder", "image_proj", "depth_guider")
    }


def write_official_files(folder: Path) -> dict[str, Path]:
    """``mimicbrush.bin`` and ``depth_anything_vitb14.pth`` in the official formats."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"mimicbrush": folder / "mimicbrush.bin", "depth": folder / "depth_anything_vitb14.pth"}
    torch.save(mimicbrush_parts(), paths["mimicbrush"])
    torch.save(state_dicts()["depth_anything"], paths["depth"])
    return paths


def vae_state_dict() -> dict[str, torch.Tensor]:
    return state_dicts()["vae"]


def load_tensors(name: str) -> dict[str, torch.Tensor]:
    import safetensors.torch

    return safetensors.torch.load_file(str(GOLDENS / name))


def load_png(rel: str):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(GOLDENS / rel))


def tiny_vae():
    """The goldens' VAE as a ComfyUI ``VAE`` (diffusers keys converted by ComfyUI), fp32."""
    import comfy.diffusers_convert
    import comfy.sd

    cfg = component("vae")["config"]
    widths = cfg["block_out_channels"]
    ddconfig = {
        "double_z": True,
        "z_channels": cfg["latent_channels"],
        "resolution": 256,
        "in_channels": cfg["in_channels"],
        "out_ch": cfg["out_channels"],
        "ch": widths[0],
        "ch_mult": [w // widths[0] for w in widths],
        "num_res_blocks": cfg["layers_per_block"],
        "attn_resolutions": [],
        "dropout": 0.0,
    }
    sd = comfy.diffusers_convert.convert_vae_state_dict(dict(vae_state_dict()))
    config = {"params": {"embed_dim": cfg["latent_channels"], "ddconfig": ddconfig}}
    return comfy.sd.VAE(sd=sd, config=config, dtype=torch.float32)


def image_tensor(rel: str) -> torch.Tensor:
    """A golden PNG as a ComfyUI IMAGE (``[1, H, W, 3]``) or MASK (``[1, H, W]``)."""
    import numpy as np

    return torch.from_numpy(load_png(rel).astype(np.float32) / 255.0)[None]


def use_pytorch_attention(monkeypatch) -> None:
    """fp32 exactness needs ComfyUI's pytorch attention (the CPU default, sub-quadratic,
    moves the UNet by ~1e-4): what ``--use-pytorch-cross-attention`` selects."""
    import comfy.clip_model
    from comfy.ldm.modules import attention

    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)
    monkeypatch.setattr(
        comfy.clip_model,
        "optimized_attention_for_device",
        lambda *a, **k: attention.attention_pytorch,
    )


def rel(ours: torch.Tensor, golden: torch.Tensor) -> float:
    return ((ours.float() - golden).abs().max() / golden.abs().max()).item()


def unet_call_eps(model, x13, context, timestep, cond_or_uncond, reference_rows=None):
    """One call the way ComfyUI's sampler makes it: wrapper + apply_model, eps recovered."""
    import comfy.model_management as mm

    mm.load_models_gpu([model] + list(getattr(model, "get_additional_models", lambda: [])()))
    sigma = model.model.model_sampling.sigmas[timestep].reshape(1).expand(x13.shape[0]).clone()
    scale = (sigma**2 + 1).sqrt().reshape(-1, 1, 1, 1)
    x = x13[:, :4] * scale
    c = {
        "c_concat": x13[:, 4:],
        "c_crossattn": context,
        "transformer_options": {
            **model.model_options["transformer_options"],
            "cond_or_uncond": cond_or_uncond,
        },
    }
    wrapper = model.model_options.get("model_function_wrapper")
    with torch.no_grad():
        args = {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": cond_or_uncond}
        den = (
            wrapper(model.model.apply_model, args)
            if wrapper
            else model.model.apply_model(x, sigma, **c)
        )
    return (x - den) / sigma.reshape(-1, 1, 1, 1)


SD_VAE_NAME = "vae-ft-mse-840000-ema-pruned.safetensors"  # the name the workflows load


def cached_sd_vae() -> Path:
    """A random full-size SD VAE (sd-vae-ft-mse's shape, fp16, LDM keys) as Load VAE reads it:
    ~160 MB, cached next to the random SD1.5 checkpoint (same key: support/sd15.py)."""
    import os

    import safetensors.torch

    from support import sd15

    path = sd15.cache_dir() / SD_VAE_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in sd15._vae_state_dict(7, torch.float16).items()}
        partial = path.with_suffix(".partial")
        safetensors.torch.save_file(state, str(partial), metadata={"analogist": "random test VAE"})
        os.replace(partial, path)
    return path
