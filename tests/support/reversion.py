"""The ReVersion goldens' tiny SD1 model, rebuilt from its manifest and written as a diffusers folder.

The weights follow the goldens README's recipe (one float64 generator per component, in
manifest order) and are checked against the manifest's sha256 before use; the folder is the
layout the official trainer reads (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``),
so the pack's own loader (``analogist_reversion.diffusers_folder``) is what reads it back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch

GOLDENS = Path(__file__).resolve().parents[1] / "goldens" / "reversion"


def manifest() -> dict:
    return json.loads((GOLDENS / "manifest.json").read_text())


def rebuild_state_dicts(spec: dict) -> dict[str, dict[str, torch.Tensor]]:
    out = {}
    for comp in spec["components"]:
        gen = torch.Generator(device="cpu").manual_seed(comp["seed"])
        state = {}
        for key, shape, fill in comp["tensors"]:
            if fill == "randn":
                state[key] = (
                    torch.randn(shape, generator=gen, dtype=torch.float64) * comp["std"]
                ).float()
            elif fill == "ones":
                state[key] = torch.ones(shape, dtype=torch.float32)
            elif fill == "zeros":
                state[key] = torch.zeros(shape, dtype=torch.float32)
            else:
                state[key] = torch.full(shape, float(fill["const"]), dtype=torch.float32)
        out[comp["name"]] = state
    return out


def digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key, tensor in state.items():
        h.update(key.encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()


def write_diffusers_folder(root: Path) -> Path:
    """Rebuild, verify (sha256) and save the tiny model in the diffusers layout under ``root``."""
    import safetensors.torch
    from comfyui_analogist.analogist_reversion.comfy_parts import tokenizer_folder

    spec = manifest()
    states = rebuild_state_dicts(spec)
    files = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
             "text_encoder": "model.safetensors"}  # fmt: skip
    for comp in spec["components"]:
        name = comp["name"]
        got = digest(states[name])
        if got != comp["sha256"]:
            raise AssertionError(
                f"rebuilt {name} weights differ from the manifest: {got} != {comp['sha256']}"
            )
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in comp["config"].items() if k != "class"}
        config["_class_name"] = comp["config"]["class"].split(".")[-1]
        (folder / "config.json").write_text(json.dumps(config, indent=1))
        safetensors.torch.save_file(states[name], str(folder / files[name]))
    tokenizer = root / "tokenizer"
    tokenizer.mkdir(exist_ok=True)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
        shutil.copy(Path(tokenizer_folder()) / name, tokenizer / name)
    settings = json.loads((Path(tokenizer_folder()) / "tokenizer_config.json").read_text())
    settings["model_max_length"] = spec["tokenizer"]["model_max_length"]
    (tokenizer / "tokenizer_config.json").write_text(json.dumps(settings, indent=1))
    return root


def record():
    import safetensors.torch

    return safetensors.torch.load_file(str(GOLDENS / "record.safetensors")), json.loads(
        (GOLDENS / "record.json").read_text()
    )


def sd15_checkpoint_name(seed: int = 0) -> str:
    return f"random-sd15-seed{seed}.safetensors"


def cached_sd15_checkpoint(seed: int = 0):
    """A full-size, random, plain (4-channel) SD1.5 checkpoint that ComfyUI detects as SD15.

    ReVersion trains on the standard text-to-image model; the shared test checkpoint is the
    9-channel inpainting one, which the trainer refuses. Same builders as ``support.sd15``.
    """
    import os

    import safetensors.torch

    from support import sd15

    path = sd15.cache_dir() / sd15_checkpoint_name(seed)
    if path.exists():
        return path
    dtype = torch.float16
    state = {}
    unet = sd15.build_unet({**sd15.SD15_INPAINT_UNET, "in_channels": 4}, seed, dtype)
    state.update({f"model.diffusion_model.{k}": v for k, v in unet.state_dict().items()})
    del unet
    state.update(
        {f"first_stage_model.{k}": v for k, v in sd15._vae_state_dict(seed + 1, dtype).items()}
    )
    clip = sd15._clip_state_dict(seed + 2, dtype)
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
