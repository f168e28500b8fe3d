"""MimicBrush's two UNets as ComfyUI models.

The official state dicts use diffusers' ``UNet2DConditionModel`` names. Their shapes give
every size (widths, levels, blocks, transformer depths, context width, input channels);
only the attention *head count* is not in a state dict: the official config says 8 (SD1.5,
diffusers' ``attention_head_dim=8``), a test model passes its own. The keys are mapped with
ComfyUI's own ``unet_to_diffusers`` into its ``UNetModel`` inside a ``BaseModel`` subclass,
wrapped in a ``ModelPatcher``: model management (device moves, offloading, fp16) applies as
for any checkpoint.

The reference UNet ships without the tail nothing reads (the last up block's last
transformer after ``norm1``, the output head): those ComfyUI tensors are zero-filled.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from .checkpoint import MimicBrushFileError, require_keys

SD15_ATTENTION_HEADS = 8

# The channels the imitative UNet sees after the noisy latent: mask 1, masked latent 4,
# depth feature 4.
CONCAT_CHANNELS = 9


def _count(sd: dict[str, Any], pattern: str) -> int:
    rx = re.compile(pattern)
    found = {int(m.group(1)) for k in sd if (m := rx.match(k))}
    return max(found) + 1 if found else 0


def infer_unet_config(sd: dict[str, torch.Tensor], heads: int, where: str) -> dict[str, Any]:
    """ComfyUI ``UNetModel`` arguments for a diffusers SD1-style state dict."""
    require_keys(sd, ["conv_in.weight", "time_embedding.linear_1.weight"], where)
    model_channels, in_channels = sd["conv_in.weight"].shape[:2]
    levels = _count(sd, r"down_blocks\.(\d+)\.")
    if levels == 0:
        raise MimicBrushFileError(f"{where} has no down_blocks: it is not a diffusers UNet.")
    res_blocks, channel_mult, depth = [], [], []
    for lvl in range(levels):
        n_res = _count(sd, rf"down_blocks\.{lvl}\.resnets\.(\d+)\.")
        res_blocks.append(n_res)
        width = sd[f"down_blocks.{lvl}.resnets.0.conv1.weight"].shape[0]
        if width % model_channels:
            raise MimicBrushFileError(f"{where}: level {lvl} width {width} is not a multiple.")
        channel_mult.append(width // model_channels)
        for j in range(n_res):
            depth.append(
                _count(sd, rf"down_blocks\.{lvl}\.attentions\.{j}\.transformer_blocks\.(\d+)\.")
            )
    depth_output = []
    for up in range(levels):
        for j in range(res_blocks[levels - 1 - up] + 1):
            depth_output.append(
                _count(sd, rf"up_blocks\.{up}\.attentions\.{j}\.transformer_blocks\.(\d+)\.")
            )
    attn2 = next((k for k in sd if k.endswith("attn2.to_k.weight")), None)
    proj_in = next((k for k in sd if k.endswith("proj_in.weight")), None)
    if attn2 is None or proj_in is None:
        raise MimicBrushFileError(f"{where} has no cross-attention: it is not a MimicBrush UNet.")
    out_channels = sd["conv_out.weight"].shape[0] if "conv_out.weight" in sd else 4
    return {
        "use_checkpoint": False,
        "image_size": 32,
        "out_channels": int(out_channels),
        "use_spatial_transformer": True,
        "legacy": False,
        "adm_in_channels": None,
        "in_channels": int(in_channels),
        "model_channels": int(model_channels),
        "num_res_blocks": res_blocks,
        "transformer_depth": depth,
        "channel_mult": channel_mult,
        "transformer_depth_middle": _count(
            sd, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."
        ),
        "use_linear_in_transformer": sd[proj_in].ndim == 2,
        "context_dim": int(sd[attn2].shape[1]),
        "num_heads": int(heads),
        "num_head_channels": -1,
        # ComfyUI pops the output depths from the end, first output block first.
        "transformer_depth_output": list(reversed(depth_output)),
        "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


def diffusers_to_comfy(
    sd: dict[str, torch.Tensor], config: dict[str, Any], where: str
) -> dict[str, torch.Tensor]:
    """Rename a diffusers UNet state dict to ComfyUI's ``UNetModel`` keys.

    ComfyUI's map lists keys some blocks do not have (a shortcut conv where widths match);
    whether every weight the model needs is there is checked against the model itself in
    :func:`build_unet_patcher`.
    """
    import comfy.utils

    mapping = comfy.utils.unet_to_diffusers(config)
    out = {mapping[k]: v for k, v in sd.items() if k in mapping}
    unused = sorted(set(sd) - set(mapping))
    if unused:
        raise MimicBrushFileError(
            f"{where} has {len(unused)} weights a SD1-style UNet does not ({unused[:4]}...): "
            "the file is from another model."
        )
    return out


def reference_unet_tail(config: dict[str, Any]) -> tuple[str, ...]:
    """ComfyUI keys the reference UNet does not ship: the output head and what follows
    ``norm1`` in the last transformer block of the last output block."""
    last = sum(r + 1 for r in config["num_res_blocks"]) - 1
    block = f"output_blocks.{last}.1."
    return (
        "out.",
        f"{block}proj_out.",
        f"{block}transformer_blocks.0.attn1.",
        f"{block}transformer_blocks.0.attn2.",
        f"{block}transformer_blocks.0.ff.",
        f"{block}transformer_blocks.0.norm2.",
        f"{block}transformer_blocks.0.norm3.",
    )


def _model_class():
    import comfy.conds
    import comfy.model_base

    class MimicBrushUNetModel(comfy.model_base.BaseModel):
        """SD1.5 ``BaseModel`` whose extra input channels come from ``mimicbrush_concat``.

        The 9 channels (mask, masked-target latent, depth feature) are built by the apply
        node; ComfyUI concatenates them after the noisy latent, resized to its batch.
        """

        def extra_conds(self, **kwargs):
            out = super().extra_conds(**kwargs)
            concat = kwargs.get("mimicbrush_concat", None)
            if concat is not None:
                out["c_concat"] = comfy.conds.CONDNoiseShape(concat)
            return out

    return MimicBrushUNetModel


def build_unet_patcher(
    comfy_sd: dict[str, torch.Tensor],
    config: dict[str, Any],
    where: str,
    zero_fill: tuple[str, ...] = (),
    dtype: torch.dtype | None = None,
):
    """A ``ModelPatcher`` around ComfyUI's SD1.5 model class holding these weights."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils

    model_config = comfy.supported_models.SD15(dict(config))
    # SD15's config overwrites the head count with SD1.5's 8: ours is what the file needs.
    model_config.unet_config.update(config)
    load_device = mm.get_torch_device()
    offload_device = mm.unet_offload_device()
    if dtype is None:
        params = comfy.utils.calculate_parameters(comfy_sd)
        dtype = mm.unet_dtype(
            model_params=params, supported_dtypes=model_config.supported_inference_dtypes
        )
    manual_cast = mm.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = _model_class()(model_config, device=offload_device)
    own = model.diffusion_model.state_dict()
    full = dict(comfy_sd)
    for key, tensor in own.items():
        if key not in full and key.startswith(zero_fill):
            full[key] = torch.zeros(tensor.shape, dtype=tensor.dtype)
    missing = [k for k in own if k not in full]
    require_keys(full, missing, where)
    unexpected = sorted(set(full) - set(own))
    if unexpected:
        raise MimicBrushFileError(f"{where}: weights of the wrong layout ({unexpected[:4]}).")
    for key, tensor in full.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise MimicBrushFileError(
                f"{where}: {key} has shape {tuple(tensor.shape)}, the UNet expects "
                f"{tuple(own[key].shape)}: the file is from another model."
            )
    model.diffusion_model.load_state_dict(full, strict=True)
    model.diffusion_model.to(dtype)
    model.eval()
    return comfy.model_patcher.ModelPatcher(
        model, load_device=load_device, offload_device=offload_device
    )


def imitative_and_reference_patchers(
    parts: dict[str, dict[str, torch.Tensor]],
    source: str,
    heads: int = SD15_ATTENTION_HEADS,
    dtype: torch.dtype | None = None,
):
    """(imitative ModelPatcher, reference ModelPatcher) from ``mimicbrush.bin``'s parts."""
    where_i, where_r = f"{source}['unet']", f"{source}['referencenet']"
    cfg_i = infer_unet_config(parts["unet"], heads, where_i)
    if cfg_i["in_channels"] != 4 + CONCAT_CHANNELS:
        raise MimicBrushFileError(
            f"{where_i} takes {cfg_i['in_channels']} input channels; MimicBrush's imitative UNet "
            f"takes 13 (latent 4, mask 1, masked latent 4, depth 4): this is another model."
        )
    cfg_r = infer_unet_config(parts["referencenet"], heads, where_r)
    # The stripped tail leaves the last output block's depth countable from norm1 only.
    cfg_r["transformer_depth_output"] = list(cfg_i["transformer_depth_output"])
    cfg_r["in_channels"] = int(parts["referencenet"]["conv_in.weight"].shape[1])
    tail = reference_unet_tail(cfg_r)
    imitative = build_unet_patcher(
        diffusers_to_comfy(parts["unet"], cfg_i, where_i), cfg_i, where_i, dtype=dtype
    )
    reference = build_unet_patcher(
        diffusers_to_comfy(parts["referencenet"], cfg_r, where_r),
        cfg_r,
        where_r,
        zero_fill=tail,
        dtype=dtype,
    )
    return imitative, reference
