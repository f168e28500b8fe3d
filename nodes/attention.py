"""The Self-Attention Cloning and Cross-Attention Masking nodes: inputs, tooltips, checks.

Each node clones the model and installs its edit through ``nodes/patching.py`` (UNets) or
``nodes/flux.py`` (Flux.1, experimental: its joint attention through ComfyUI's attention
override).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ..analogist_attn.blocks import (
    PAPER_END_LAYER,
    PAPER_START_LAYER,
    transformer_block_keys,
    transformer_block_modules,
)
from ..analogist_attn.geometry import (
    RegionTokensInside,
)
from ..analogist_attn.sac import PAPER_SAC_SCALE
from ..analogist_pixels.layout import LAYOUT_TYPE, GridLayout, check_layout
from ..analogist_pixels.region import has_region, latent_regions
from .flux import is_flux, patch_flux
from .layout_check import install_layout_check
from .patching import (
    MAX_LAYER,
    PASSES,
    CAMOutput,
    SACAttention,
    StepPassGate,
    check_passes,
    describe_patch,
    existing_patch,
    install_cam,
    install_sac_guard,
    plan,
    replace_slots,
    replacing_ours,
    sigma_range,
)

log = logging.getLogger("analogist")


def _tooltip_layers(what: str) -> tuple[str, str]:
    start = (
        f"First transformer block that gets {what}, counted in execution order. "
        "SD1.5 (16 blocks): 0-5 input 1,2,4,5,7,8; 6 middle; 7-15 output 3-11. "
        "SDXL (70 blocks): 0-3 input 4,5; 4-23 input 7,8; 24-33 middle; 34-63 output 0-2; "
        "64-69 output 3-5. Flux.1 (experimental; 57 blocks): 0-18 double blocks, 19-56 "
        "single blocks. Paper (SD1.5): 3. The log names the blocks a range covers."
    )
    end = (
        f"Block after the last one that gets {what} (end is exclusive). Paper (SD1.5): 11, "
        "i.e. blocks 3..10. 0 = the paper's levels for this model, whatever it is "
        "(SD1.5: 3..10; SDXL: 2..65); start_layer is then not used. On Flux.1, 0 gives "
        "layers 11..38 (the paper's share of the depth, 3/16 to 11/16): a starting point, "
        "untested, since no Flux weights could be tried."
    )
    return start, end


def _common_inputs(what: str) -> tuple[dict, dict]:
    start_tip, end_tip = _tooltip_layers(what)
    return {
        "model": (
            "MODEL",
            {
                "tooltip": (
                    "The diffusion model to patch: an SD1.5 (the paper) or SDXL inpainting UNet, or "
                    "Flux.1 Fill (experimental: SAC/CAM on its joint attention, needs ComfyUI 0.3.4x+; "
                    "never tried with real Flux weights). SD3, Flux.2 and video models are not "
                    "supported. It is cloned; the input stays unpatched."
                )
            },
        ),
        "layout": (
            LAYOUT_TYPE,
            {
                "tooltip": (
                    "Where A, A', B and B' sit in the grid. Connect the layout from the same GridCompose "
                    "whose grid is sampled."
                )
            },
        ),
    }, {
        "start_layer": (
            "INT",
            {"default": PAPER_START_LAYER, "min": 0, "max": MAX_LAYER, "tooltip": start_tip},
        ),
        "end_layer": (
            "INT",
            {"default": PAPER_END_LAYER, "min": 0, "max": MAX_LAYER, "tooltip": end_tip},
        ),
        "start_percent": (
            "FLOAT",
            {
                "default": 0.0,
                "min": 0.0,
                "max": 1.0,
                "step": 0.01,
                "tooltip": f"Part of the sampling schedule where {what} acts: from this fraction (0 = first step).",
            },
        ),
        "end_percent": (
            "FLOAT",
            {
                "default": 1.0,
                "min": 0.0,
                "max": 1.0,
                "step": 0.01,
                "tooltip": "...to this fraction (1 = last step). Paper: the whole schedule, 0 to 1.",
            },
        ),
        "passes": (
            list(PASSES),
            {
                "default": PASSES[0],
                "tooltip": (
                    f"Which CFG passes get {what}: both (the paper), only the prompt (cond) pass, or only "
                    f"the negative (uncond) pass."
                ),
            },
        ),
    }


class AnalogistSACPatch:
    DESCRIPTION = (
        "Self-Attention Cloning (Analogist, SIGGRAPH 2024): in the chosen self-attention "
        "layers, the attention from A to B is copied, scaled by sac_scale, onto A' to B' "
        "(and B to A onto B' to A'), so B' relates to B as A' relates to A. Exact, with no "
        "N x N attention matrix. Returns a patched clone of the model."
    )
    CATEGORY = "Analogist"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with Self-Attention Cloning; feed it to the KSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        required, tail = _common_inputs("Self-Attention Cloning")
        required["sac_scale"] = (
            "FLOAT",
            {
                "default": PAPER_SAC_SCALE,
                "min": 0.0,
                "max": 10.0,
                "step": 0.05,
                "tooltip": (
                    "Scale s of the cloned attention logits (S[A',B'] = s * S[A,B]). Paper: 1.3; higher "
                    "follows the example more strongly."
                ),
            },
        )
        required.update(tail)
        return {"required": required}

    def patch(
        self, model, layout, sac_scale, start_layer, end_layer, start_percent, end_percent, passes
    ):
        node = "Analogist SAC"
        check_layout(layout)  # before anything else: a wrong socket value gets a clear error
        if not math.isfinite(sac_scale):
            raise ValueError(
                f"{node}: sac_scale={sac_scale} is not a finite number; use a value from 0 to 10 "
                f"(the paper: {PAPER_SAC_SCALE})."
            )
        check_passes(passes)
        if is_flux(model):
            gate = StepPassGate(*sigma_range(model, start_percent, end_percent), passes)
            return (
                patch_flux(
                    model, node, "sac", layout, start_layer, end_layer, gate, float(sac_scale)
                ),
            )
        blocks, sigma_start, sigma_end = plan(
            model, node, start_layer, end_layer, start_percent, end_percent
        )
        gate = StepPassGate(sigma_start, sigma_end, passes)
        slots = replace_slots(model, "attn1")
        for key in blocks:
            existing = existing_patch(slots, key)
            if existing is None or replacing_ours(existing, "sac", key):
                continue
            raise ValueError(
                f"{node}: block {key} already has a self-attention replacement "
                f"({describe_patch(existing)}). A replace slot holds one function and SAC cannot "
                "wrap another self-attention replacement exactly; choose SAC layers without "
                "this block with start_layer/end_layer, or patch the other node elsewhere."
            )
        all_keys = transformer_block_keys(model.model)
        layers = {key: all_keys.index(key) for key in blocks}
        fn = SACAttention(layout, gate, float(sac_scale), layers)
        patched = model.clone()
        for key in blocks:
            patched.set_model_attn1_replace(fn, *key)
        install_sac_guard(patched, layers)
        install_layout_check(patched, node, layout)
        return (patched,)


class AnalogistCAMPatch:
    DESCRIPTION = (
        "Cross-Attention Masking (Analogist, SIGGRAPH 2024): in the chosen cross-attention "
        "layers only B' listens to the text prompt; A, A' and B take nothing from it. "
        "Acts on the cross-attention output, so another node's cross-attention patch "
        "(IPAdapter and the like) keeps working on B', in either order. With a region of "
        "interest on B (Grid Compose's b_region), text_only_in_region narrows that to the "
        "B' tokens inside the region. Returns a patched clone of the model."
    )
    CATEGORY = "Analogist"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with Cross-Attention Masking; feed it to the KSampler.",)

    @classmethod
    def INPUT_TYPES(cls):
        required, tail = _common_inputs("Cross-Attention Masking")
        required.update(tail)
        return {"required": required, "optional": {"text_only_in_region": _REGION_CAM_INPUT}}

    def patch(
        self,
        model,
        layout,
        start_layer,
        end_layer,
        start_percent,
        end_percent,
        passes,
        text_only_in_region=False,
    ):
        node = "Analogist CAM"
        check_layout(layout)
        check_passes(passes)
        region = region_cam(layout, text_only_in_region, node)
        if is_flux(model):
            gate = StepPassGate(*sigma_range(model, start_percent, end_percent), passes)
            return (
                patch_flux(model, node, "cam", layout, start_layer, end_layer, gate, region=region),
            )
        blocks, sigma_start, sigma_end = plan(
            model, node, start_layer, end_layer, start_percent, end_percent
        )
        gate = StepPassGate(sigma_start, sigma_end, passes)
        modules = transformer_block_modules(model.model)
        to_out = {}
        for key in blocks:
            attn2 = getattr(modules[key], "attn2", None)
            if attn2 is None:
                raise ValueError(
                    f"{node}: block {key} has no cross-attention; choose other layers."
                )
            to_out[key] = attn2.to_out
        patched = model.clone()
        install_cam(patched, CAMOutput(layout, gate, to_out, region))
        install_layout_check(patched, node, layout)
        return (patched,)


_REGION_CAM_INPUT = (
    "BOOLEAN",
    {
        "default": False,
        "tooltip": (
            "Text only in the region: with a region of interest on B (Grid Compose's b_region), "
            "only the B' tokens inside it listen to the prompt (a token is inside when any of "
            "its pixels is in the region); the rest of B' is treated like A, A', B. Off: all of "
            "B' listens (the paper). Needs a layout with a region."
        ),
    },
)


def region_cam(
    layout: GridLayout, text_only_in_region: Any, node: str
) -> RegionTokensInside | None:
    """The region CAM keeps text for, or None (the paper's CAM)."""
    if not isinstance(text_only_in_region, bool):
        raise TypeError(
            f"{node}: text_only_in_region must be true or false, got {text_only_in_region!r}."
        )
    if not text_only_in_region:
        return None
    if not has_region(layout):
        raise ValueError(
            f"{node}: text_only_in_region is on but the layout has no region on B. Connect a "
            "MASK to Grid Compose's b_region (the part of B that may change), or turn "
            "text_only_in_region off."
        )
    return RegionTokensInside(latent_regions(layout))


NODE_CLASS_MAPPINGS = {
    "AnalogistSACPatch": AnalogistSACPatch,
    "AnalogistCAMPatch": AnalogistCAMPatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnalogistSACPatch": "Analogist Self-Attention Cloning",
    "AnalogistCAMPatch": "Analogist Cross-Attention Masking",
}
