"""MimicBrush nodes: load the official files, prepare a reference imitation, paste back.

The model code, pre/post-processing and reference attention live in
``analogist_mimicbrush``; these classes declare inputs, find files in ComfyUI's model
folders and validate. Weights are read only from the ``mimicbrush`` model folder (and a
``depth_anything`` folder for the depth model); nothing is downloaded or written.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import torch

from ..analogist_mimicbrush import pipeline

CATEGORY = "Analogist/MimicBrush"
CROP_INPUTS = {
    "crop_around_mask": (
        "BOOLEAN",
        {
            "default": False,
            "tooltip": "For targets larger than 512 px: work on a crop around the mask (at "
            "least 512 px each way) instead of the whole picture shrunk to 512, and paste it "
            "back. On MimicBrush Paste: connect Apply's crop output instead (or set the same).",
        },
    ),
    "crop_margin": (
        "FLOAT",
        {
            "default": 0.25,
            "min": 0.0,
            "max": 10.0,
            "step": 0.05,
            "tooltip": "With crop_around_mask: context kept around the mask, as a fraction of "
            "the mask's size on each side. Same value on Apply and Paste.",
        },
    ),
}


def _crop_margin(crop_around_mask: bool, crop_margin: float) -> float | None:
    return float(crop_margin) if crop_around_mask else None


MIMICBRUSH_FOLDER = "mimicbrush"
DEPTH_FOLDER = "depth_anything"
MIMICBRUSH_TYPE = "MIMICBRUSH"
CROP_TYPE = "MIMICBRUSH_CROP"


def _folder_paths():
    for name in ("folder_paths", "comfy.cmd.folder_paths"):
        try:
            return importlib.import_module(name)
        except Exception:
            continue
    raise RuntimeError("ComfyUI's folder_paths module is not importable: run inside ComfyUI.")


def register_model_folders() -> Any:
    """``models/mimicbrush`` and ``models/depth_anything`` (extra_model_paths.yaml may add
    more). Called when the node lists its files, not at import."""
    fp = _folder_paths()
    for name in (MIMICBRUSH_FOLDER, DEPTH_FOLDER):
        if name not in fp.folder_names_and_paths:
            fp.add_model_folder_path(name, os.path.join(fp.models_dir, name))
    return fp


def _files(folder: str) -> list[str]:
    fp = register_model_folders()
    try:
        return list(fp.get_filename_list(folder))
    except Exception:
        return []


def _depth_choices() -> list[str]:
    return [f"{DEPTH_FOLDER}/{n}" for n in _files(DEPTH_FOLDER)] + [
        f"{MIMICBRUSH_FOLDER}/{n}" for n in _files(MIMICBRUSH_FOLDER) if "depth" in n.lower()
    ]


def _resolve(folder: str, name: str, what: str) -> str:
    fp = register_model_folders()
    path = fp.get_full_path(folder, name)
    if path is None:
        raise ValueError(
            f"{what}: '{name}' is not in ComfyUI's models/{folder} folder. Put the file there "
            "and refresh the page (R)."
        )
    return path


class AnalogistMimicBrushLoader:
    """Load MimicBrush's official weights from ComfyUI's model folders."""

    DESCRIPTION = (
        "Loads MimicBrush (reference imitation, Chen et al. 2024) from the official files: "
        "mimicbrush.bin from models/mimicbrush and Depth Anything V1 (depth_anything_vitb14.pth) "
        "from models/depth_anything or models/mimicbrush. Gives the imitative UNet as a MODEL "
        "(LoRAs and other model nodes apply to it) and the rest (reference UNet, image encoder, "
        "depth model) for MimicBrush Apply. Use the SD1.5 VAE sd-vae-ft-mse with Load VAE."
    )
    CATEGORY = CATEGORY
    SEARCH_ALIASES = [
        "mimicbrush",
        "load mimicbrush",
        "reference inpaint",
        "imitate",
        "mimic brush",
    ]
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", MIMICBRUSH_TYPE)
    RETURN_NAMES = ("model", "mimicbrush")
    OUTPUT_TOOLTIPS = (
        "The imitative UNet (13 input channels): connect it to MimicBrush Apply.",
        "The reference UNet, image encoder and depth model, for MimicBrush Apply.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "mimicbrush": (
                    _files(MIMICBRUSH_FOLDER),
                    {
                        "tooltip": "mimicbrush.bin from ali-vilab/MimicBrush, placed in models/mimicbrush."
                    },
                ),
                "depth_model": (
                    _depth_choices(),
                    {
                        "tooltip": "Depth Anything V1 ViT-B/14 (depth_anything_vitb14.pth), in "
                        "models/depth_anything or models/mimicbrush. Needed even with shape control "
                        "off (the official model then sees a blank image)."
                    },
                ),
            }
        }

    def load(self, mimicbrush: str, depth_model: str):
        path = _resolve(MIMICBRUSH_FOLDER, mimicbrush, "mimicbrush")
        folder, _, name = depth_model.partition("/")
        if folder not in (MIMICBRUSH_FOLDER, DEPTH_FOLDER) or not name:
            raise ValueError(
                f"depth_model: '{depth_model}' is not one of the listed files; choose a file "
                "from models/depth_anything or models/mimicbrush."
            )
        depth_path = _resolve(folder, name, "depth_model")
        models = pipeline.load_models(path, depth_path)
        return (models.imitative, models)


class AnalogistMimicBrushApply:
    """Prepare the masked target and the reference for sampling."""

    DESCRIPTION = (
        "MimicBrush: repaints the masked region of the target so it imitates the matching "
        "part of the reference (texture, pattern, an object's look). No prompt. Gives the "
        "patched MODEL, positive and negative conditioning and the LATENT to sample (50 DDIM "
        "steps, CFG 5 in the paper), then VAE Decode and MimicBrush Paste. Images are worked "
        "at 512 x 512 after padding to a square, as the official demo does."
    )
    CATEGORY = CATEGORY
    SEARCH_ALIASES = [
        "mimicbrush",
        "reference inpaint",
        "imitate",
        "imitate reference",
        "texture transfer",
        "reference imitation",
        "zero-shot image editing",
    ]
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING", "LATENT", "NOISE", CROP_TYPE)
    RETURN_NAMES = ("model", "positive", "negative", "latent", "noise", "crop")
    OUTPUT_TOOLTIPS = (
        "The imitative UNet with reference attention: sample with this model.",
        "The reference's image embedding plus mask, masked target and depth channels.",
        "The unconditional embedding (a blank image) with the same channels.",
        "An empty 512 x 512 latent, one row per target and sample.",
        "The official initial noise from seed (for SamplerCustomAdvanced); KSampler's own "
        "seed works too, with other numbers.",
        "Where each target was cut (crop_around_mask, crop_margin, boxes): connect it to "
        "MimicBrush Paste's crop so the result goes back exactly where it came from.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The MODEL output of MimicBrush Loader."}),
                "mimicbrush": (
                    MIMICBRUSH_TYPE,
                    {"tooltip": "The mimicbrush output of MimicBrush Loader."},
                ),
                "vae": ("VAE", {"tooltip": "The SD1.5 VAE (sd-vae-ft-mse) from Load VAE."}),
                "target": ("IMAGE", {"tooltip": "The image to edit (a batch edits each)."}),
                "mask": (
                    "MASK",
                    {
                        "tooltip": "The region to repaint, same size as the target (paint it in "
                        "Load Image's mask editor). Pixels above 0.5 are repainted."
                    },
                ),
                "reference": (
                    "IMAGE",
                    {"tooltip": "The image to imitate: one for all targets, or one per target."},
                ),
                "shape_control": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "On: keep the target's shape (depth) in the region and take only "
                        "the texture from the reference. Off: the reference's object may change "
                        "the shape.",
                    },
                ),
                "samples_per_target": (
                    "INT",
                    {"default": 1, "min": 1, "max": 64, "tooltip": "Samples per target image."},
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "tooltip": "Seeds the VAE samples and the noise output, in the official order.",
                    },
                ),
            },
            "optional": dict(CROP_INPUTS),
        }

    def apply(
        self,
        model,
        mimicbrush,
        vae,
        target,
        mask,
        reference,
        shape_control,
        samples_per_target,
        seed,
        crop_around_mask=False,
        crop_margin=0.25,
    ):
        import comfy.utils

        if not isinstance(mimicbrush, pipeline.MimicBrushModels):
            raise ValueError("mimicbrush: connect the mimicbrush output of MimicBrush Loader.")
        if not hasattr(vae, "first_stage_model"):
            raise ValueError("vae: connect a VAE from Load VAE (sd-vae-ft-mse).")
        models = pipeline.MimicBrushModels(
            imitative=model,
            reference=mimicbrush.reference,
            encoder=mimicbrush.encoder,
            depth=mimicbrush.depth,
            source=mimicbrush.source,
        )
        progress = comfy.utils.ProgressBar(4)
        prepared = pipeline.prepare(
            models,
            vae,
            target,
            mask,
            reference,
            bool(shape_control),
            int(samples_per_target),
            int(seed),
            progress,
            _crop_margin(crop_around_mask, crop_margin),
        )
        return (
            prepared.model,
            prepared.positive,
            prepared.negative,
            prepared.latent,
            OfficialNoise(seed, prepared.noise),
            prepared.crop,
        )


class OfficialNoise:
    """A NOISE for SamplerCustomAdvanced holding the official initial noise."""

    def __init__(self, seed: int, noise: torch.Tensor):
        self.seed = seed
        self.noise = noise

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        shape = tuple(input_latent["samples"].shape)
        if shape != tuple(self.noise.shape):
            raise ValueError(
                f"MimicBrush noise is {tuple(self.noise.shape)} but the latent is {shape}: sample "
                "the latent MimicBrush Apply returned."
            )
        return self.noise.clone()


class AnalogistMimicBrushPaste:
    """Composite MimicBrush's decoded images over the original targets."""

    DESCRIPTION = (
        "Puts MimicBrush's result back: resizes the decoded 512 x 512 image to the padded "
        "target, crops the padding and blends it over the original target through the mask "
        "blurred as the official demo does. Outside the mask the target is unchanged."
    )
    CATEGORY = CATEGORY
    SEARCH_ALIASES = ["mimicbrush", "paste back", "composite", "reference inpaint", "imitate"]
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("The edited targets, at their original size (rows target x sample).",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "VAE Decode of the sampled latent."}),
                "target": ("IMAGE", {"tooltip": "The target given to MimicBrush Apply."}),
                "mask": ("MASK", {"tooltip": "The mask given to MimicBrush Apply."}),
            },
            "optional": {
                **CROP_INPUTS,
                "crop": (
                    CROP_TYPE,
                    {
                        "tooltip": "MimicBrush Apply's crop output. Connected, it decides where "
                        "the result goes (leave crop_around_mask off here, or set it as on "
                        "Apply) and a different target or mask is refused."
                    },
                ),
            },
        }

    def paste(self, images, target, mask, crop_around_mask=False, crop_margin=0.25, crop=None):
        pipeline.check_inputs(target, mask, target)
        margin = _crop_margin(crop_around_mask, crop_margin)
        if crop is not None:
            _check_crop_widgets(crop, margin)
        return (pipeline.paste(images, target, mask, margin, crop),)


def _check_crop_widgets(crop: Any, margin: float | None) -> None:
    """Connected crop: the widgets may stay off (the crop decides) or agree with it."""
    if not isinstance(crop, pipeline.CropGeometry):
        raise ValueError("crop: connect the crop output of MimicBrush Apply.")
    if margin is None:
        return
    if crop.crop_margin is None or abs(crop.crop_margin - margin) > 1e-6:
        raise ValueError(
            f"crop_around_mask on, crop_margin {margin:g} here, but the connected crop says "
            f"MimicBrush Apply ran with {crop.describe()}. Turn crop_around_mask off on this "
            "node (the crop input decides), or set the same values as on Apply."
        )


NODE_CLASS_MAPPINGS = {
    "AnalogistMimicBrushLoader": AnalogistMimicBrushLoader,
    "AnalogistMimicBrushApply": AnalogistMimicBrushApply,
    "AnalogistMimicBrushPaste": AnalogistMimicBrushPaste,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnalogistMimicBrushLoader": "MimicBrush Loader",
    "AnalogistMimicBrushApply": "MimicBrush Apply",
    "AnalogistMimicBrushPaste": "MimicBrush Paste",
}
