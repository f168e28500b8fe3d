"""Reading the official MimicBrush files, with errors that say what a wrong file is.

``mimicbrush.bin`` is one ``torch.save`` dict of five state dicts in diffusers /
transformers naming; ``depth_anything_vit{s,b,l}14.pth`` is Depth Anything V1's state dict
(DINOv2 torch-hub names under ``pretrained.``, the DPT head under ``depth_head.``). Both
load with ``weights_only=True``: no code in a downloaded file ever runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

MIMICBRUSH_PARTS = ("unet", "referencenet", "image_encoder", "image_proj", "depth_guider")

# A few keys each part cannot do without; the full check happens when the weights are
# loaded into the modules (strict, with the missing keys named).
_PART_PROBES = {
    "unet": ("conv_in.weight", "conv_out.weight", "mid_block.attentions.0.proj_in.weight"),
    "referencenet": ("conv_in.weight", "mid_block.attentions.0.proj_in.weight"),
    "image_encoder": (
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.encoder.layers.0.self_attn.q_proj.weight",
    ),
    "image_proj": ("projector.weight", "projector.bias"),
    "depth_guider": ("conv_in.weight", "conv_out.weight", "blocks.0.weight"),
}

_DEPTH_PROBES = (
    "pretrained.patch_embed.proj.weight",
    "pretrained.pos_embed",
    "pretrained.blocks.0.attn.qkv.weight",
    "pretrained.norm.weight",
    "depth_head.scratch.output_conv2.2.weight",
)

_MIMICBRUSH_WHAT = (
    "MimicBrush's mimicbrush.bin (from ali-vilab/MimicBrush on Hugging Face: a dict with "
    "'unet', 'referencenet', 'image_encoder', 'image_proj' and 'depth_guider')"
)
_DEPTH_WHAT = (
    "Depth Anything V1's depth_anything_vitb14.pth (LiheYoung/depth_anything_vitb14, the file "
    "MimicBrush's depth_model folder holds)"
)


class MimicBrushFileError(ValueError):
    """A file is not the MimicBrush / Depth Anything file it should be."""


def _torch_load(path: str, what: str) -> object:
    if not os.path.isfile(path):
        raise MimicBrushFileError(f"{path} does not exist; it should be {what}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, a safetensors file, pickled code, ...
        keys = _safetensors_keys(path)
        if keys is not None:
            raise MimicBrushFileError(
                f"{os.path.basename(path)} is a safetensors file (first keys: {keys[:3]}), not "
                f"{what}.{_looks_like(keys)}"
            ) from exc
        raise MimicBrushFileError(
            f"{os.path.basename(path)} could not be read as a torch file "
            f"({type(exc).__name__}: {str(exc)[:200]}). It should be {what}; the file may be "
            "truncated (an interrupted download): download it again."
        ) from exc


def _safetensors_keys(path: str) -> list[str] | None:
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            return list(f.keys())
    except Exception:
        return None


def _looks_like(keys: list[str]) -> str:
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return " It looks like a Stable Diffusion checkpoint: put that in models/checkpoints."
    if any(k.startswith("state_dict") for k in keys):
        return " It looks like a training checkpoint (a 'state_dict' wrapper)."
    return ""


def load_mimicbrush_bin(path: str) -> dict[str, dict[str, torch.Tensor]]:
    """The five state dicts of ``mimicbrush.bin``, validated."""
    name = os.path.basename(path)
    data = _torch_load(path, _MIMICBRUSH_WHAT)
    if not isinstance(data, Mapping):
        raise MimicBrushFileError(
            f"{name} holds a {type(data).__name__}, not a dict; it should be {_MIMICBRUSH_WHAT}."
        )
    keys = [str(k) for k in data.keys()]
    missing = [p for p in MIMICBRUSH_PARTS if p not in data]
    if missing:
        raise MimicBrushFileError(
            f"{name} is not {_MIMICBRUSH_WHAT}: it has no {missing} "
            f"(its first keys: {keys[:5]}).{_looks_like(keys)}"
        )
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for part in MIMICBRUSH_PARTS:
        sd = data[part]
        if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise MimicBrushFileError(f"{name}['{part}'] is not a state dict of tensors.")
        lost = [k for k in _PART_PROBES[part] if k not in sd]
        if lost:
            raise MimicBrushFileError(
                f"{name}['{part}'] lacks {lost}: the file is incomplete or not "
                f"{_MIMICBRUSH_WHAT}. Download mimicbrush.bin again."
            )
        parts[part] = dict(sd)
    return parts


def load_depth_anything(path: str) -> dict[str, torch.Tensor]:
    """Depth Anything V1's state dict, validated (``pretrained.*`` and ``depth_head.*``)."""
    name = os.path.basename(path)
    data = _torch_load(path, _DEPTH_WHAT)
    if not isinstance(data, Mapping):
        raise MimicBrushFileError(
            f"{name} holds a {type(data).__name__}; it should be {_DEPTH_WHAT}."
        )
    keys = [str(k) for k in data.keys()]
    if "unet" in data and "referencenet" in data:
        raise MimicBrushFileError(
            f"{name} is mimicbrush.bin, not the depth model; choose {_DEPTH_WHAT}."
        )
    lost = [k for k in _DEPTH_PROBES if k not in data]
    if lost:
        raise MimicBrushFileError(
            f"{name} is not {_DEPTH_WHAT}: it lacks {lost} (its first keys: {keys[:5]})."
            f"{_looks_like(keys)}"
        )
    return dict(data)


def require_keys(sd: Mapping[str, torch.Tensor], keys: list[str], where: str) -> None:
    """Stop with the missing keys named when a loaded module would be left half-random."""
    missing = [k for k in keys if k not in sd]
    if missing:
        shown = ", ".join(missing[:6]) + (
            f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        )
        raise MimicBrushFileError(
            f"{where} is missing {len(missing)} weights ({shown}): the file is incomplete or "
            "from another model. Download it again."
        )
