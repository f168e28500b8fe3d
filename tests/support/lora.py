"""Random LoRA files in the kohya key format that ComfyUI's LoraLoader reads."""

from __future__ import annotations

from pathlib import Path

import torch


def random_unet_lora(
    unet: torch.nn.Module, seed: int = 0, rank: int = 4, std: float = 0.05
) -> dict[str, torch.Tensor]:
    """A LoRA on every attention q/k/v/out projection of ``unet`` (a ComfyUI UNetModel).

    Keys are ``lora_unet_<module path with _>.lora_down/lora_up/alpha``, the layout
    ``comfy.lora`` maps onto ``diffusion_model.<module path>.weight``.
    """
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if not name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q")):
            continue
        weight = module.weight
        out_features, in_features = weight.shape[:2]
        prefix = "lora_unet_" + name.replace(".", "_")
        state[f"{prefix}.lora_down.weight"] = torch.randn(rank, in_features, generator=gen) * std
        state[f"{prefix}.lora_up.weight"] = torch.randn(out_features, rank, generator=gen) * std
        state[f"{prefix}.alpha"] = torch.tensor(float(rank))
    return state


def write_lora(path: Path, state: dict[str, torch.Tensor]) -> Path:
    import safetensors.torch

    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
