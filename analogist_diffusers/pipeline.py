"""One analogy with a diffusers inpainting pipeline, the paper's way.

The grid and the B' crop come from ``analogist_pixels.grid`` (the same code as the ComfyUI
GridCompose and GridCrop nodes), the attention edits from :mod:`.processors`; the
pipeline is left as it was afterwards (its scheduler and processors restored).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..analogist_attn import defaults
from ..analogist_attn.sac import PAPER_SAC_SCALE
from ..analogist_pixels.grid import compose_grids, crop_b_prime, to_float, to_uint8
from ..analogist_pixels.layout import ARRANGEMENT_DEFAULT
from .processors import PAPER_LAYERS, install_analogist

PAPER_NEGATIVE_PROMPT = defaults.NEGATIVE_PROMPT
PAPER_PROMPT_SUFFIX = defaults.PROMPT_SUFFIX
PAPER_CFG = defaults.CFG
PAPER_STRENGTH = defaults.DENOISE
PAPER_STEPS = defaults.STEPS
PAPER_CELL = defaults.CELL

ImageInput = Image.Image | str | Path


def run_analogy(
    pipe: Any,
    a: ImageInput,
    a_prime: ImageInput,
    b: ImageInput,
    prompt: str,
    *,
    negative_prompt: str = PAPER_NEGATIVE_PROMPT,
    prompt_suffix: str = PAPER_PROMPT_SUFFIX,
    cell_size: int = PAPER_CELL,
    border: int = 2,
    arrangement: str = ARRANGEMENT_DEFAULT,
    fit: str = "stretch",
    sac_scale: float = PAPER_SAC_SCALE,
    sac_layers: Sequence[int] | None = PAPER_LAYERS,
    cam_layers: Sequence[int] | None = PAPER_LAYERS,
    guidance_scale: float = PAPER_CFG,
    strength: float = PAPER_STRENGTH,
    num_inference_steps: int = PAPER_STEPS,
    num_images: int = 1,
    generator: torch.Generator | None = None,
    ddim: bool = True,
    **pipe_kwargs: Any,
) -> list[Image.Image]:
    """Solve A : A' :: B : ? with ``pipe`` (a ``StableDiffusionInpaintPipeline``).

    Builds the paper's 2x2 grid (cells ``cell_size`` px, B copied into the B' cell, the
    B' quadrant as the mask), installs SAC and CAM (paper: scale 1.3, layers 3..10),
    samples with DDIM (``ddim=False`` keeps the pipeline's scheduler), CFG 15, strength
    0.98, 50 steps, the paper's negative prompt and ``prompt + prompt_suffix``, and
    returns ``num_images`` B' images cut out of the sampled grids at B's original size.
    Other keyword arguments go to the pipeline call.
    """
    images = {"a": _load(a, "a"), "a_prime": _load(a_prime, "a_prime"), "b": _load(b, "b")}
    composed = compose_grids(
        images["a"],
        images["a_prime"],
        images["b"],
        cell_width=cell_size,
        cell_height=cell_size,
        border=border,
        fit=fit,
        arrangement=arrangement,
    )
    layout = composed.layout
    grid = Image.fromarray(to_uint8(composed.grid)[0])
    mask = Image.fromarray(to_uint8(composed.mask)[0], mode="L")

    scheduler = pipe.scheduler
    installation = install_analogist(
        pipe, layout, sac_scale=sac_scale, sac_layers=sac_layers, cam_layers=cam_layers
    )
    try:
        if ddim:
            from diffusers import DDIMScheduler

            pipe.scheduler = DDIMScheduler.from_config(scheduler.config)
        sampled = pipe(
            prompt=prompt + prompt_suffix,
            negative_prompt=negative_prompt,
            image=grid,
            mask_image=mask,
            height=layout.grid_height,
            width=layout.grid_width,
            strength=strength,
            guidance_scale=guidance_scale,
            num_inference_steps=num_inference_steps,
            num_images_per_prompt=num_images,
            generator=generator,
            output_type="pt",
            **pipe_kwargs,
        ).images
    finally:
        pipe.scheduler = scheduler
        installation.remove()
    # Crop in float (as GridCrop does on ComfyUI's decoded image), round to 8 bits once.
    grids = sampled.detach().float().cpu().permute(0, 2, 3, 1)
    b_prime = crop_b_prime(grids, layout)
    return [Image.fromarray(pixels) for pixels in to_uint8(b_prime)]


def _load(image: ImageInput, name: str) -> torch.Tensor:
    """A PIL image (or a path to one) as a ``[1, H, W, C]`` float tensor in 0..1."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no image file at {path}")
        with Image.open(path) as opened:
            image = opened.copy()
    if not isinstance(image, Image.Image):
        raise TypeError(f"{name}: expected a PIL image or a path, got {type(image).__name__}")
    mode = "RGBA" if "A" in image.getbands() else "RGB"
    return to_float(np.array(image.convert(mode)))[None]
