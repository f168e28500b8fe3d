"""Random-weight CLIP vision models built with ComfyUI's own classes.

* ``tiny_clip_vision``: ComfyUI's ``ClipVisionModel`` (what Load CLIP Vision returns) at
  toy widths, for node tests; its ``encode_image`` is ComfyUI's own.
* ``cached_clip_vision_file``: a full-size ViT-L/14 image encoder (ComfyUI's
  ``clip_vision_config_vitl.json``) with random weights, saved as safetensors for the
  server's ``models/clip_vision``. Full size because Load CLIP Vision recognises a model
  by its number of layers: a smaller one is refused (on both hosts).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .sd15 import randomize_

TINY_CONFIG = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "image_size": 224,  # the 2024 host always resizes to 224
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model",
    "num_attention_heads": 2,
    "num_channels": 3,
    "num_hidden_layers": 2,
    "patch_size": 32,
    "projection_dim": 16,
    "torch_dtype": "float32",
}
WEIGHT_STD = 0.2  # large enough that different images get clearly different embeddings


def tiny_clip_vision(folder: Path, seed: int = 0, **overrides):
    """ComfyUI's ``ClipVisionModel`` with a toy config and seeded random weights.

    ``folder`` holds the config file (the 2024 host takes a path, not a dict).
    """
    import comfy.clip_vision

    config = {**TINY_CONFIG, **overrides}
    path = Path(folder) / f"tiny_clip_vision_{seed}.json"
    path.write_text(json.dumps(config))
    model = comfy.clip_vision.ClipVisionModel(str(path))
    randomize_(model.model, seed, std=WEIGHT_STD)
    return model


def vitl_state_dict(seed: int, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    import comfy.clip_model
    import comfy.clip_vision
    from comfy import ops

    config = json.loads(
        Path(comfy.clip_vision.__file__).with_name("clip_vision_config_vitl.json").read_text()
    )
    model = comfy.clip_model.CLIPVisionModelProjection(
        config, torch.float32, "cpu", ops.disable_weight_init
    )
    randomize_(model, seed)
    return {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}


def cache_dir() -> Path:
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    root = Path(
        os.environ.get("ANALOGIST_TEST_CACHE", Path(tempfile.gettempdir()) / "analogist-tests")
    )
    return root / f"clip-vision-{digest}"


def clip_vision_name(seed: int = 0) -> str:
    return f"random-clip-vit-l-seed{seed}.safetensors"


def cached_clip_vision_file(seed: int = 0) -> Path:
    """The random ViT-L/14 image encoder as a file (~600 MB, made once per temp folder)."""
    import safetensors.torch

    path = cache_dir() / clip_vision_name(seed)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        safetensors.torch.save_file(
            vitl_state_dict(seed), str(partial), metadata={"analogist": "random test weights"}
        )
        os.replace(partial, path)
    return path
