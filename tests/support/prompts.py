"""API-prompt pieces for the host tests: the paper's grid around the host's SD1.5 inpainting.

Every such prompt starts with nodes ``"1"`` to ``"5"`` (:func:`grid_nodes`: the checkpoint,
A, A' and B, and Grid Compose, whose layout is ``["5", 3]``) and ends with the sampler,
the decode, Grid Crop and SaveImage (:func:`sample_and_crop`); the tests write what lies
between (text encoders, the VLM node, the attention patches).
"""

from __future__ import annotations

# SAC's and CAM's layer and step range as the paper runs them (``sac_scale`` is SAC's own).
PAPER_RANGE = {
    "start_layer": 3,
    "end_layer": 11,
    "start_percent": 0.0,
    "end_percent": 1.0,
    "passes": "cond and uncond (paper)",
}


def grid_nodes(checkpoint: str, images: tuple[str, str, str], cell: int = 64) -> dict:
    """Nodes 1-5: the checkpoint, A, A' and B loaded from ``input/``, and Grid Compose."""
    a, a_prime, b = images
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "LoadImage", "inputs": {"image": a}},
        "3": {"class_type": "LoadImage", "inputs": {"image": a_prime}},
        "4": {"class_type": "LoadImage", "inputs": {"image": b}},
        "5": {
            "class_type": "AnalogistGridCompose",
            "inputs": {
                "a": ["2", 0],
                "a_prime": ["3", 0],
                "b": ["4", 0],
                "cell_width": cell,
                "cell_height": cell,
                "border": 2,
                "fit": "stretch",
                "arrangement": "A' right of A (paper)",
            },
        },
    }


def inpaint_conditioning(positive: str, negative: str) -> dict:
    """InpaintModelConditioning on the grid and its mask, from the two text encoders' ids."""
    return {
        "class_type": "InpaintModelConditioning",
        "inputs": {
            "positive": [positive, 0],
            "negative": [negative, 0],
            "vae": ["1", 2],
            "pixels": ["5", 0],
            "mask": ["5", 2],
            # 0.30.0: keep everything outside the mask (0.0.1 always did; it ignores this)
            "noise_mask": True,
        },
    }


def sample_and_crop(
    first: int, model: list, conditioning: str, steps: int, cfg: float, prefix: str
) -> dict:
    """DDIM KSampler (seed 0, denoise 0.98) -> VAEDecode -> Grid Crop (B's own size) ->
    SaveImage, as the nodes ``first`` to ``first + 3``."""
    sampler, decode, crop, save = (str(first + i) for i in range(4))
    return {
        sampler: {
            "class_type": "KSampler",
            "inputs": {
                "model": model,
                "seed": 0,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": "ddim",
                "scheduler": "normal",
                "positive": [conditioning, 0],
                "negative": [conditioning, 1],
                "latent_image": [conditioning, 2],
                "denoise": 0.98,
            },
        },
        decode: {"class_type": "VAEDecode", "inputs": {"samples": [sampler, 0], "vae": ["1", 2]}},
        crop: {
            "class_type": "AnalogistGridCrop",
            "inputs": {
                "grid": [decode, 0],
                "layout": ["5", 3],
                "output_size": "original size of B",
            },
        },
        save: {
            "class_type": "SaveImage",
            "inputs": {"images": [crop, 0], "filename_prefix": prefix},
        },
    }
