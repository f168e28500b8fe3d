"""UNet sizes come from the state dict: SD1.5's real widths and the goldens' tiny ones."""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_mimicbrush import unet
from support import mimicbrush as smb
from support.sd15 import SD15_INPAINT_UNET

COMPARED = (
    "in_channels",
    "model_channels",
    "num_res_blocks",
    "channel_mult",
    "transformer_depth",
    "transformer_depth_middle",
    "transformer_depth_output",
    "context_dim",
    "use_linear_in_transformer",
    "out_channels",
)


def diffusers_shapes(config: dict) -> dict[str, torch.Tensor]:
    """Empty (meta) tensors of a ComfyUI UNet under diffusers' names: no memory used."""
    import comfy.ops
    import comfy.utils
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    model = UNetModel(**config, device="meta", operations=comfy.ops.disable_weight_init)
    own = model.state_dict()
    mapping = comfy.utils.unet_to_diffusers(config)
    return {d: own[c] for d, c in mapping.items() if c in own}


def test_sd15_widths_are_read_from_the_state_dict():
    config = {**SD15_INPAINT_UNET, "in_channels": 13}
    inferred = unet.infer_unet_config(diffusers_shapes(config), heads=8, where="sd15")
    assert {k: inferred[k] for k in COMPARED} == {k: config[k] for k in COMPARED}


def test_the_goldens_tiny_widths_are_read_from_the_state_dict():
    cfg = smb.component("mimicbrush.unet")["config"]
    inferred = unet.infer_unet_config(smb.mimicbrush_parts()["unet"], heads=2, where="tiny")
    assert inferred["model_channels"] == cfg["block_out_channels"][0]
    assert inferred["channel_mult"] == [
        w // cfg["block_out_channels"][0] for w in cfg["block_out_channels"]
    ]
    assert inferred["context_dim"] == cfg["cross_attention_dim"]
    assert inferred["in_channels"] == cfg["in_channels"]
    assert inferred["transformer_depth"] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert inferred["transformer_depth_output"] == [1] * 9 + [0] * 3


def test_the_reference_unet_lacks_exactly_the_24_tail_tensors():
    parts = smb.mimicbrush_parts()
    cfg = unet.infer_unet_config(parts["referencenet"], heads=2, where="ref")
    cfg["transformer_depth_output"] = [1] * 9 + [0] * 3
    have = unet.diffusers_to_comfy(parts["referencenet"], cfg, "ref")
    full = diffusers_shapes(cfg)
    import comfy.utils

    mapping = comfy.utils.unet_to_diffusers(cfg)
    missing = sorted(mapping[d] for d in full if mapping[d] not in have)
    assert len(missing) == 24
    assert all(k.startswith(unet.reference_unet_tail(cfg)) for k in missing)


def test_an_sd_unet_with_9_channels_is_not_taken_for_mimicbrush():
    from comfyui_analogist.analogist_mimicbrush.checkpoint import MimicBrushFileError

    parts = dict(smb.mimicbrush_parts())
    sd9 = diffusers_shapes({**SD15_INPAINT_UNET, "model_channels": 32, "context_dim": 32})
    parts["unet"] = {k: torch.zeros(v.shape) for k, v in sd9.items()}
    with pytest.raises(MimicBrushFileError, match="takes 9 input channels.*takes 13"):
        unet.imitative_and_reference_patchers(parts, "mimicbrush.bin", heads=2)
