"""MimicBrush's image encoder, projector and depth guider.

* Image encoder: a fine-tuned CLIP ViT-H/14 vision tower in transformers' names, loaded into
  ComfyUI's own ``CLIPVisionModelProjection``; MimicBrush reads its penultimate hidden state
  (no post-LayerNorm) for all 257 tokens, then one ``Linear`` (the "projector").
* Depth guider: conv_in (1 -> c0), then pairs of convs (the second of each pair stride 2,
  widening), SiLU after every conv but the last, conv_out -> 4 channels; its input is the
  depth map resized to 512 x 512 (bilinear, aligned corners). Output 4 x 64 x 64.

Sizes come from the state dicts. The CLIP head count is not in a state dict: ViT-H/14 has
16 (head width 80), the official config's value.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import MimicBrushFileError

CLIP_VIT_H_HEADS = 16
CLIP_LAYER_NORM_EPS = 1e-5
DEPTH_GUIDER_INPUT = 512


def clip_vision_config(sd: dict[str, torch.Tensor], heads: int = CLIP_VIT_H_HEADS) -> dict:
    patch = sd["vision_model.embeddings.patch_embedding.weight"]
    positions = sd["vision_model.embeddings.position_embedding.weight"].shape[0]
    grid = int(round((positions - 1) ** 0.5))
    layers = 1 + max(
        int(m.group(1)) for k in sd if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))
    )
    config = {
        "hidden_act": "gelu",
        "hidden_size": int(patch.shape[0]),
        "image_size": int(grid * patch.shape[-1]),
        "intermediate_size": int(sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
        "layer_norm_eps": CLIP_LAYER_NORM_EPS,
        "model_type": "clip_vision_model",
        "num_attention_heads": heads,
        "num_channels": 3,
        "num_hidden_layers": int(layers),
        "patch_size": int(patch.shape[-1]),
    }
    if "visual_projection.weight" in sd:
        config["projection_dim"] = int(sd["visual_projection.weight"].shape[0])
    return config


class ImageEncoder(nn.Module):
    """CLIP vision (ComfyUI's class) + MimicBrush's projector: pixels -> ``[B, 257, C]``."""

    def __init__(
        self, clip_sd: dict[str, torch.Tensor], proj_sd: dict[str, torch.Tensor], where: str
    ):
        super().__init__()
        import comfy.clip_model
        import comfy.ops

        self.config = clip_vision_config(clip_sd)
        self.clip = comfy.clip_model.CLIPVisionModelProjection(
            self.config, torch.float32, "cpu", comfy.ops.manual_cast
        )
        sd = {k: v for k, v in clip_sd.items() if not k.endswith("position_ids")}
        missing, unexpected = self.clip.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise MimicBrushFileError(
                f"{where}['image_encoder'] does not fit a CLIP vision tower "
                f"(missing {missing[:4]}, unexpected {unexpected[:4]}): download the file again."
            )
        weight = proj_sd["projector.weight"]
        if weight.shape[1] != self.config["hidden_size"]:
            raise MimicBrushFileError(
                f"{where}['image_proj'] takes {weight.shape[1]} features, the image encoder "
                f"gives {self.config['hidden_size']}: the parts come from different files."
            )
        self.projector = nn.Linear(weight.shape[1], weight.shape[0])
        self.projector.load_state_dict(
            {k.removeprefix("projector."): v for k, v in proj_sd.items()}, strict=True
        )
        self.eval().requires_grad_(False)

    @property
    def image_size(self) -> int:
        return self.config["image_size"]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.clip(pixel_values=pixel_values, intermediate_output=-2)[1]
        return self.projector(hidden.to(self.projector.weight.dtype))


class DepthGuider(nn.Module):
    def __init__(self, sd: dict[str, torch.Tensor], where: str):
        super().__init__()
        count = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
        w_in = sd["conv_in.weight"]
        self.conv_in = nn.Conv2d(w_in.shape[1], w_in.shape[0], 3, padding=1)
        blocks = []
        for i in range(count):
            w = sd[f"blocks.{i}.weight"]
            blocks.append(nn.Conv2d(w.shape[1], w.shape[0], 3, padding=1, stride=2 if i % 2 else 1))
        self.blocks = nn.ModuleList(blocks)
        w_out = sd["conv_out.weight"]
        self.conv_out = nn.Conv2d(w_out.shape[1], w_out.shape[0], 3, padding=1)
        try:
            self.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise MimicBrushFileError(
                f"{where}['depth_guider'] is damaged: {str(exc)[:300]}"
            ) from exc
        self.eval().requires_grad_(False)

    def forward(self, depth_map: torch.Tensor) -> torch.Tensor:
        """``depth_map [B, H, W]`` -> ``[B, 4, 64, 64]``."""
        x = depth_map.unsqueeze(1).to(self.conv_in.weight.dtype)
        x = F.interpolate(
            x, size=(DEPTH_GUIDER_INPUT, DEPTH_GUIDER_INPUT), mode="bilinear", align_corners=True
        )
        x = F.silu(self.conv_in(x))
        for block in self.blocks:
            x = F.silu(block(x))
        return self.conv_out(x)
