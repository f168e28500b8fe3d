"""MimicBrush's inputs for ComfyUI's samplers: patched MODEL, CONDITIONING, LATENT, noise.

What the official pipeline does before its denoising loop, per target and reference, on the
user's VAE and the loaded MimicBrush models:

* reference: pad white, LANCZOS 512, VAE posterior *sample* x 0.18215 (the clean latent the
  reference UNet sees every step); CLIP input (bicubic 224) -> cond image embedding; the
  uncond embedding is the same encoder on an all-zero normalised image;
* target: pad white, mask pad black (``> 128``), masked pixels black, LANCZOS 512, VAE
  posterior sample x 0.18215; mask LANCZOS 512, ``>= 0.5``, every 8th pixel; depth feature
  from the padded target at 518 (zeroed input when shape control is off);
* one CPU ``torch.Generator(seed)`` drawn in the official order: reference sample, initial
  noise, masked-target sample. Batches draw each of the three as one tensor, in row order.

The imitative UNet's 9 extra input channels [mask, masked latent, depth feature] travel in
the conditioning as ``mimicbrush_concat``. Several samples per target are rows
``target * samples + k``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analogist_pixels.grid import check_image
from . import images
from .checkpoint import load_depth_anything, load_mimicbrush_bin
from .depth_anything import DepthAnything, depth_anything_from_state_dict
from .encoders import DepthGuider, ImageEncoder
from .reference_attention import patch_model
from .unet import SD15_ATTENTION_HEADS, imitative_and_reference_patchers


class DepthStack(nn.Module):
    """Depth Anything then the depth guider: normalised 518 image -> ``[B, 4, 64, 64]``."""

    def __init__(self, anything: DepthAnything, guider: DepthGuider):
        super().__init__()
        self.anything = anything
        self.guider = guider

    @property
    def input_size(self) -> int:
        return self.anything.input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.guider(self.anything(x))


@dataclass
class MimicBrushModels:
    """What the loader node hands to the apply node (the MIMICBRUSH type)."""

    imitative: Any  # ModelPatcher
    reference: Any  # ModelPatcher
    encoder: Any  # ModelPatcher around ImageEncoder
    depth: Any  # ModelPatcher around DepthStack
    source: str


def _module_patcher(module: nn.Module, dtype: torch.dtype | None):
    import comfy.model_management as mm
    import comfy.model_patcher

    load_device = mm.get_torch_device()
    if dtype is None:
        dtype = torch.float16 if mm.should_use_fp16(load_device) else torch.float32
    module.to(dtype)
    cls = getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)
    return cls(module, load_device=load_device, offload_device=mm.unet_offload_device())


def load_models(
    mimicbrush_path: str,
    depth_path: str,
    dtype: torch.dtype | None = None,
    heads: int = SD15_ATTENTION_HEADS,
) -> MimicBrushModels:
    import os

    source = os.path.basename(mimicbrush_path)
    parts = load_mimicbrush_bin(mimicbrush_path)
    depth_sd = load_depth_anything(depth_path)
    imitative, reference = imitative_and_reference_patchers(parts, source, heads=heads, dtype=dtype)
    encoder = ImageEncoder(parts["image_encoder"], parts["image_proj"], source)
    stack = DepthStack(
        depth_anything_from_state_dict(depth_sd, os.path.basename(depth_path)),
        DepthGuider(parts["depth_guider"], source),
    )
    return MimicBrushModels(
        imitative=imitative,
        reference=reference,
        encoder=_module_patcher(encoder, dtype),
        depth=_module_patcher(stack, dtype),
        source=source,
    )


def _run(patcher, x: torch.Tensor) -> torch.Tensor:
    import comfy.model_management as mm

    mm.load_models_gpu([patcher])
    module = patcher.model
    dtype = next(module.parameters()).dtype
    with torch.no_grad():
        return module(x.to(patcher.load_device, dtype)).float().cpu()


def vae_posterior(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscaled posterior mean and std of ``pixels`` (``[N, 3, H, W]``, -1..1)."""
    import comfy.model_management as mm

    mm.load_models_gpu([vae.patcher])
    fsm = vae.first_stage_model
    with torch.no_grad():
        # Contiguous NCHW: torch's CPU GroupNorm is inaccurate on channels-last input.
        x = pixels.to(vae.device, vae.vae_dtype).contiguous()
        moments = fsm.quant_conv(fsm.encoder(x)).float().cpu()
    mean, logvar = moments.chunk(2, dim=1)
    return mean, torch.exp(0.5 * logvar.clamp(-30.0, 20.0))


@dataclass(frozen=True)
class CropGeometry:
    """How MimicBrush Apply cut its targets, for MimicBrush Paste (the ``MIMICBRUSH_CROP``
    type): the margin (``None``: whole targets), the targets' size, one box per target (in
    target pixels) and the samples per target. Paste puts each result back into its box."""

    crop_margin: float | None
    target_size: tuple[int, int]  # (height, width)
    boxes: tuple[images.CropBox, ...]
    samples_per_target: int

    def describe(self) -> str:
        if self.crop_margin is None:
            return "crop_around_mask off"
        return f"crop_around_mask on, crop_margin {self.crop_margin:g}"


@dataclass
class Prepared:
    model: Any
    positive: list
    negative: list
    latent: dict
    noise: torch.Tensor
    # For tests and the paste node: per-target and per-reference intermediates.
    image_embeds_cond: torch.Tensor
    image_embeds_uncond: torch.Tensor
    depth_feature: torch.Tensor
    reference_latents: torch.Tensor
    masked_latents: torch.Tensor
    mask_latent: torch.Tensor
    crop: CropGeometry


def _image_rows(image: Any, name: str) -> torch.Tensor:
    """An IMAGE in 0..1 with 3 or 4 channels; NaN, 0..255 and -1..1 pixels are refused by the
    pack's one image check (``analogist_pixels.grid.check_image``)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(
            f"{name} is not an IMAGE ([batch, height, width, 3] in 0..1); got {shape}. "
            f"Connect a Load Image output to {name}."
        )
    try:
        check_image(image.detach(), name)  # a decoded image may still track gradients
        return image
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _check_mask_values(mask: torch.Tensor) -> None:
    if not mask.is_floating_point():
        raise ValueError(
            f"mask: expected float values in 0..1 (a ComfyUI MASK), got {mask.dtype}. Connect a "
            "MASK output (Load Image's mask, or Convert Image to Mask)."
        )
    finite = torch.isfinite(mask)
    if not bool(finite.all()):
        raise ValueError(
            f"mask has {int((~finite).sum())} values that are NaN or infinite: the node before "
            "it produced them. Connect a clean mask (Load Image's mask editor)."
        )
    low, top = float(mask.min()), float(mask.max())
    if low < 0.0 or top > 1.0:
        raise ValueError(
            f"mask has values from {low:g} to {top:g}, but a MASK is 0..1 (1 = repaint). "
            + (
                "It looks like a 0..255 mask: divide it by 255 before MimicBrush."
                if top > 1.5
                else "Clamp or normalise it to 0..1 before MimicBrush."
            )
        )


def check_inputs(target: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Validate and return the mask as ``[B, H, W]`` (one row per target)."""
    _image_rows(target, "target")
    _image_rows(reference, "reference")
    if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(
            f"mask is not a MASK ([batch, height, width] in 0..1); got {shape}. Connect Load "
            "Image's MASK output (paint the region in its mask editor)."
        )
    _check_mask_values(mask)
    if mask.dim() == 2:
        mask = mask[None]
    h, w = target.shape[1:3]
    if tuple(mask.shape[1:]) != (h, w):
        raise ValueError(
            f"mask is {mask.shape[2]}x{mask.shape[1]} but target is {w}x{h}: draw the mask on "
            "this target (the mask editor of its Load Image) or resize the mask to the target."
        )
    if mask.shape[0] not in (1, target.shape[0]):
        raise ValueError(
            f"mask has {mask.shape[0]} rows for {target.shape[0]} targets: give 1 or one each."
        )
    if reference.shape[0] not in (1, target.shape[0]):
        raise ValueError(
            f"reference has {reference.shape[0]} images for {target.shape[0]} targets: give one "
            "reference for all targets, or one per target."
        )
    mask = mask.expand(target.shape[0], -1, -1)
    for i in range(mask.shape[0]):
        masked = images.binarize_mask(images.mask_to_u8(mask[i])) > 0
        where = f" (target {i})" if mask.shape[0] > 1 else ""
        if not masked.any():
            raise ValueError(
                f"mask{where} is empty (no pixel above 0.5): paint the region MimicBrush should "
                "repaint."
            )
        if masked.all():
            raise ValueError(
                f"mask{where} covers the whole target: MimicBrush repaints the masked region from "
                "the reference and needs unmasked target around it. Paint only the region to change."
            )
    return mask


def prepare(
    models: MimicBrushModels,
    vae,
    target: torch.Tensor,
    mask: torch.Tensor,
    reference: torch.Tensor,
    shape_control: bool,
    samples: int = 1,
    seed: int = 0,
    progress=None,
    crop_margin: float | None = None,
) -> Prepared:
    """``crop_margin`` set: each target is worked on a crop around its mask (see
    :func:`images.crop_box`), pasted back by :func:`paste` with the same margin."""
    import comfy.model_management as mm

    mask = check_inputs(target, mask, reference)
    if samples < 1:
        raise ValueError(f"samples_per_target={samples}: give 1 or more.")
    n_targets, n_refs = target.shape[0], reference.shape[0]
    size = images.PIPELINE_SIZE

    def tick():
        mm.throw_exception_if_processing_interrupted()
        if progress is not None:
            progress.update(1)

    refs512, clip_inputs = [], []
    for r in range(n_refs):
        padded, _ = images.pad_to_square(images.image_to_u8(reference[r]), 255)
        refs512.append(images.to_unit_range(images.lanczos(padded, size)))
        clip_inputs.append(
            images.clip_normalise(images.clip_input_u8(padded, models.encoder.model.image_size))
        )
    collages, mask_latents, depth_inputs, boxes = [], [], [], []
    depth_size = models.depth.model.input_size
    for b in range(n_targets):
        t_u8, m_u8, box = _target_region(target[b], mask[b], crop_margin)
        boxes.append(box)
        t_padded, _ = images.pad_to_square(t_u8, 255)
        m_padded, _ = images.pad_to_square(m_u8, 0)
        collages.append(
            images.to_unit_range(images.lanczos(images.collage(t_padded, m_padded), size))
        )
        mask_latents.append(images.mask_latent(images.mask_512(m_padded, size)))
        depth_inputs.append(
            images.depth_normalise(images.depth_input_u8(t_padded, depth_size), shape_control)
        )
    tick()

    cond = torch.cat([_run(models.encoder, x) for x in clip_inputs])
    uncond = _run(models.encoder, torch.zeros_like(clip_inputs[0]))
    tick()
    depth_feature = torch.cat([_run(models.depth, x) for x in depth_inputs])
    tick()

    latent_in = models.imitative.model.process_latent_in
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    ref_mean, ref_std = vae_posterior(vae, torch.cat(refs512))
    ref_latents = latent_in(ref_mean + ref_std * torch.randn(ref_mean.shape, generator=gen))
    rows = n_targets * samples
    noise = torch.randn((rows,) + tuple(ref_mean.shape[1:]), generator=gen)
    col_mean, col_std = vae_posterior(vae, torch.cat(collages))
    masked_latents = latent_in(col_mean + col_std * torch.randn(col_mean.shape, generator=gen))
    tick()

    mask_latent = torch.cat(mask_latents)
    target_of_row = torch.arange(rows) // samples
    ref_of_row = target_of_row if n_refs == n_targets else torch.zeros(rows, dtype=torch.long)
    concat = torch.cat(
        [mask_latent[target_of_row], masked_latents[target_of_row], depth_feature[target_of_row]],
        dim=1,
    )
    model = patch_model(
        models.imitative, models.reference, ref_latents[ref_of_row], cond[ref_of_row]
    )
    positive = [[cond[ref_of_row], {"mimicbrush_concat": concat}]]
    negative = [[uncond.expand(rows, -1, -1).clone(), {"mimicbrush_concat": concat}]]
    latent = {"samples": torch.zeros((rows,) + tuple(ref_mean.shape[1:]))}
    return Prepared(
        model=model,
        positive=positive,
        negative=negative,
        latent=latent,
        noise=noise,
        image_embeds_cond=cond,
        image_embeds_uncond=uncond,
        depth_feature=depth_feature,
        reference_latents=ref_latents,
        masked_latents=masked_latents,
        mask_latent=mask_latent,
        crop=CropGeometry(
            crop_margin=crop_margin,
            target_size=(int(target.shape[1]), int(target.shape[2])),
            boxes=tuple(boxes),
            samples_per_target=samples,
        ),
    )


def _target_region(target_row, mask_row, crop_margin):
    """The target and its binarised mask (uint8), cut to the crop box when cropping."""
    t_u8 = images.image_to_u8(target_row)
    m_u8 = images.binarize_mask(images.mask_to_u8(mask_row))
    box = _box(m_u8, crop_margin)
    return box.cut(t_u8), box.cut(m_u8), box


def _box(m_u8: np.ndarray, crop_margin: float | None) -> images.CropBox:
    if crop_margin is None:
        return images.CropBox(0, 0, m_u8.shape[0], m_u8.shape[1])
    if not 0.0 <= crop_margin <= 10.0:
        raise ValueError(f"crop_margin={crop_margin}: give a fraction of the mask's size, 0 to 10.")
    return images.crop_box(m_u8 > 0, crop_margin)


def paste(
    decoded: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    crop_margin: float | None = None,
    crop: CropGeometry | None = None,
) -> torch.Tensor:
    """Decoded 512 images back onto their targets (rows ``target * samples + k``).

    With ``crop_margin`` (the value given to :func:`prepare`) the result is composited in the
    crop around the mask and put back into the whole target. With ``crop`` (what
    :func:`prepare` returned) its margin is used and the target, mask and rows are checked
    against it, so a result is never pasted into another place than it was cut from."""
    if mask.dim() == 2:
        mask = mask[None]
    _image_rows(decoded, "images")
    _image_rows(target, "target")
    if decoded.shape[0] % target.shape[0]:
        raise ValueError(
            f"{decoded.shape[0]} decoded images do not split over {target.shape[0]} targets: "
            "connect the target the MimicBrush apply node was given."
        )
    samples = decoded.shape[0] // target.shape[0]
    mask = mask.expand(target.shape[0], -1, -1)
    if crop is not None:
        crop_margin = crop.crop_margin
        _check_crop(crop, target, samples)
    out = []
    for j in range(decoded.shape[0]):
        b = j // samples
        whole = images.image_to_u8(target[b])
        m_whole = images.binarize_mask(images.mask_to_u8(mask[b]))
        box = _box(m_whole, crop_margin)
        if crop is not None and box != crop.boxes[b]:
            raise ValueError(
                f"mask{f' (target {b})' if target.shape[0] > 1 else ''} is not the mask MimicBrush "
                f"Apply was given: it would paste into {_where(box)}, Apply cut {_where(crop.boxes[b])}. "
                "Connect the same mask to MimicBrush Apply and MimicBrush Paste."
            )
        t_u8, m_u8 = box.cut(whole), box.cut(m_whole)
        pad = images.padding_for(t_u8.shape[0], t_u8.shape[1])
        synth = pad.crop(
            images.resize_u8(images.decoded_to_u8(decoded[j]), (pad.side, pad.side), "bilinear")
        )
        result = whole.copy()
        box.cut(result)[...] = images.composite(synth, t_u8, images.blur_alpha(m_u8))
        out.append(torch.from_numpy(result.astype(np.float32) / 255.0))
    return torch.stack(out)


def _where(box: images.CropBox) -> str:
    return f"{box.width}x{box.height} px at x={box.left}, y={box.top}"


def _check_crop(crop: CropGeometry, target: torch.Tensor, samples: int) -> None:
    h, w = int(target.shape[1]), int(target.shape[2])
    if (h, w) != crop.target_size or target.shape[0] != len(crop.boxes):
        ch, cw = crop.target_size
        raise ValueError(
            f"target is {target.shape[0]} image(s) of {w}x{h} but MimicBrush Apply worked on "
            f"{len(crop.boxes)} of {cw}x{ch}: connect the target given to MimicBrush Apply."
        )
    if samples != crop.samples_per_target:
        raise ValueError(
            f"images has {samples * target.shape[0]} rows but MimicBrush Apply made "
            f"{crop.samples_per_target} sample(s) for each of {target.shape[0]} target(s): "
            "connect VAE Decode of the latent sampled from MimicBrush Apply's latent."
        )
