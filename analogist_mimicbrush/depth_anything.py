"""Depth Anything V1 (Yang et al. 2024): a DINOv2 ViT /14 encoder and a DPT head, plain torch.

Written from the architecture's definition; module names follow the official state dict
(DINOv2's torch-hub names under ``pretrained.``, the head under ``depth_head.``) so the
file loads strictly. Every size is read from the state dict; only the head width is fixed
by the ViT's (64 per head, as in every DINOv2). What MimicBrush uses:

* the last 4 blocks' outputs, each through the final LayerNorm, class token dropped;
* per level: 1x1 projection, resize (4x / 2x transposed conv, identity, stride-2 conv),
  a 3x3 conv to the head width, then RefineNet fusion from coarse to fine;
* output convs, a bilinear resize (aligned corners) to 14 x the patch grid, ReLU.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

DINOV2_HEAD_DIM = 64
DINOV2_LAYERNORM_EPS = 1e-6
INTERMEDIATE_LAYERS = 4


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=DINOV2_LAYERNORM_EPS)
        self.attn = _Attention(dim, heads)
        self.ls1 = _LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=DINOV2_LAYERNORM_EPS)
        self.mlp = _Mlp(dim, hidden)
        self.ls2 = _LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2(nn.Module):
    def __init__(self, dim: int, depth: int, patch: int, positions: int, hidden: int):
        super().__init__()
        self.patch_size = patch
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, positions, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = _PatchEmbed(dim, patch)
        self.blocks = nn.ModuleList(
            _Block(dim, dim // DINOV2_HEAD_DIM, hidden) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=DINOV2_LAYERNORM_EPS)

    def last_layers(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        """The last ``n`` blocks' patch tokens, after the final norm (class token dropped)."""
        tokens = self.patch_embed(x)
        if tokens.shape[1] + 1 != self.pos_embed.shape[1]:
            side = int(math.isqrt(self.pos_embed.shape[1] - 1)) * self.patch_size
            raise ValueError(
                f"the depth model's input is {x.shape[-2]}x{x.shape[-1]}; it takes {side}x{side}"
            )
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i >= len(self.blocks) - n:
                outputs.append(self.norm(x)[:, 1:])
        return outputs


class _ResidualConvUnit(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x)))) + x


class _FusionBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = _ResidualConvUnit(features)  # noqa: N815 (the official key names)
        self.resConfUnit2 = _ResidualConvUnit(features)  # noqa: N815
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None, size=None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    def __init__(self, out_channels: list[int], features: int, head_hidden: int):
        super().__init__()
        for i, ch in enumerate(out_channels, start=1):
            setattr(self, f"layer{i}_rn", nn.Conv2d(ch, features, 3, padding=1, bias=False))
            setattr(self, f"refinenet{i}", _FusionBlock(features))
        self.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, head_hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(head_hidden, 1, 1),
            nn.ReLU(),
        )


class DPTHead(nn.Module):
    def __init__(self, dim: int, out_channels: list[int], features: int, head_hidden: int):
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(dim, ch, 1) for ch in out_channels)
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, stride=4),
                nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(out_channels[3], out_channels[3], 3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch(out_channels, features, head_hidden)

    def forward(
        self, features: list[torch.Tensor], grid_h: int, grid_w: int, patch: int
    ) -> torch.Tensor:
        levels = []
        for i, x in enumerate(features):
            x = x.transpose(1, 2).reshape(x.shape[0], x.shape[-1], grid_h, grid_w)
            levels.append(self.resize_layers[i](self.projects[i](x)))
        s: Any = self.scratch  # layerN_rn, refinenetN are set by name
        l1, l2, l3, l4 = (getattr(s, f"layer{i + 1}_rn")(x) for i, x in enumerate(levels))
        path = s.refinenet4(l4, size=l3.shape[2:])
        path = s.refinenet3(path, l3, size=l2.shape[2:])
        path = s.refinenet2(path, l2, size=l1.shape[2:])
        path = s.refinenet1(path, l1)
        out = s.output_conv1(path)
        out = F.interpolate(
            out, (grid_h * patch, grid_w * patch), mode="bilinear", align_corners=True
        )
        return s.output_conv2(out)


class DepthAnything(nn.Module):
    """``forward(x [B,3,H,W] normalised) -> depth [B,H,W]``."""

    def __init__(self, dim, depth, patch, positions, hidden, out_channels, features, head_hidden):
        super().__init__()
        self.pretrained = DinoV2(dim, depth, patch, positions, hidden)
        self.depth_head = DPTHead(dim, out_channels, features, head_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        patch = self.pretrained.patch_size
        feats = self.pretrained.last_layers(x, INTERMEDIATE_LAYERS)
        depth = self.depth_head(feats, h // patch, w // patch, patch)
        depth = F.interpolate(depth, size=(h, w), mode="bilinear", align_corners=True)
        return F.relu(depth).squeeze(1)

    @property
    def input_size(self) -> int:
        return int(math.isqrt(self.pretrained.pos_embed.shape[1] - 1)) * self.pretrained.patch_size


def depth_anything_from_state_dict(sd: dict[str, torch.Tensor], where: str) -> DepthAnything:
    """Build the model with the sizes the state dict has and load it strictly."""
    from .checkpoint import MimicBrushFileError

    dim = sd["pretrained.patch_embed.proj.weight"].shape[0]
    patch = sd["pretrained.patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(
        int(m.group(1)) for k in sd if (m := re.match(r"pretrained\.blocks\.(\d+)\.", k))
    )
    model = DepthAnything(
        dim=dim,
        depth=depth,
        patch=patch,
        positions=sd["pretrained.pos_embed"].shape[1],
        hidden=sd["pretrained.blocks.0.mlp.fc1.weight"].shape[0],
        out_channels=[sd[f"depth_head.projects.{i}.weight"].shape[0] for i in range(4)],
        features=sd["depth_head.scratch.layer1_rn.weight"].shape[0],
        head_hidden=sd["depth_head.scratch.output_conv2.0.weight"].shape[0],
    )
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise MimicBrushFileError(
            f"{where} does not fit Depth Anything V1 ({str(exc)[:300]}): the file is incomplete "
            "or another depth model (Depth Anything V2 is not the same file)."
        ) from exc
    return model.eval().requires_grad_(False)
