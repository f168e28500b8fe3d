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
    check_allow_flag,
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
        f"Where in the model {what} starts. Lower: it also shapes the overall layout and "
        "shapes of B'; higher: only finer detail. The default 3 is the paper's; most "
        "artists never change it (the help page has the layer map of each model)."
    )
    end = (
        f"Where {what} stops (this layer itself is not included). Higher reaches more of "
        "the model (a stronger effect), lower less. The default 11 is the paper's for SD1.5. "
        "0 = the paper's layers for whatever model is loaded (the safe choice for SDXL or "
        "Flux); start_layer is then not used."
    )
    return start, end


_ALLOW_NON_INPAINTING_INPUT = (
    "BOOLEAN",
    {
        "default": False,
        "tooltip": (
            "Off (the default): a checkpoint that is not an inpainting model is an error, "
            "since B' would ignore the example. On: run anyway, with a warning in the "
            "console. Only for experiments."
        ),
    },
)


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


def apply_sac(
    model: Any,
    layout: GridLayout,
    sac_scale: float,
    start_layer: int,
    end_layer: int,
    start_percent: float,
    end_percent: float,
    passes: str,
    node: str,
    allow_non_inpainting: bool = False,
) -> Any:
    """A clone of ``model`` with Self-Attention Cloning on the chosen layers."""
    check_layout(layout)  # before anything else: a wrong socket value gets a clear error
    if not math.isfinite(sac_scale):
        raise ValueError(
            f"{node}: sac_scale={sac_scale} is not a finite number; use a value from 0 to 10 "
            f"(the paper: {PAPER_SAC_SCALE})."
        )
    check_passes(passes)
    allow = check_allow_flag(allow_non_inpainting, node)
    if is_flux(model):
        gate = StepPassGate(*sigma_range(model, start_percent, end_percent), passes)
        return patch_flux(
            model,
            node,
            "sac",
            layout,
            start_layer,
            end_layer,
            gate,
            float(sac_scale),
            allow_non_inpainting=allow,
        )
    blocks, sigma_start, sigma_end = plan(
        model, node, start_layer, end_layer, start_percent, end_percent, allow
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
    return patched


def apply_cam(
    model: Any,
    layout: GridLayout,
    start_layer: int,
    end_layer: int,
    start_percent: float,
    end_percent: float,
    passes: str,
    node: str,
    text_only_in_region: Any = False,
    allow_non_inpainting: bool = False,
) -> Any:
    """A clone of ``model`` with Cross-Attention Masking on the chosen layers."""
    check_layout(layout)
    check_passes(passes)
    allow = check_allow_flag(allow_non_inpainting, node)
    region = region_cam(layout, text_only_in_region, node)
    if is_flux(model):
        gate = StepPassGate(*sigma_range(model, start_percent, end_percent), passes)
        return patch_flux(
            model,
            node,
            "cam",
            layout,
            start_layer,
            end_layer,
            gate,
            region=region,
            allow_non_inpainting=allow,
        )
    blocks, sigma_start, sigma_end = plan(
        model, node, start_layer, end_layer, start_percent, end_percent, allow
    )
    gate = StepPassGate(sigma_start, sigma_end, passes)
    modules = transformer_block_modules(model.model)
    to_out = {}
    for key in blocks:
        attn2 = getattr(modules[key], "attn2", None)
        if attn2 is None:
            raise ValueError(f"{node}: block {key} has no cross-attention; choose other layers.")
        to_out[key] = attn2.to_out
    patched = model.clone()
    install_cam(patched, CAMOutput(layout, gate, to_out, region))
    install_layout_check(patched, node, layout)
    return patched


def check_settings(
    sac_scale: Any = None,
    start_layer: Any = None,
    end_layer: Any = None,
    start_percent: Any = None,
    end_percent: Any = None,
) -> bool | str:
    """What can be checked before the queue: True, or the artist's message.

    ComfyUI passes only the inputs ``VALIDATE_INPUTS`` names, and ``None`` for one fed by
    a link (its value is not known yet); naming an input also turns off the host's own
    min/max check for it, so the ranges are checked here.
    """

    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    if sac_scale is not None and (
        not number(sac_scale) or not math.isfinite(sac_scale) or not 0.0 <= sac_scale <= 10.0
    ):
        return (
            f"SAC strength must be a number from 0 to 10: sac_scale is {sac_scale!r}. "
            f"The paper's {PAPER_SAC_SCALE} is a good start."
        )
    for name, value in (("start_layer", start_layer), ("end_layer", end_layer)):
        if value is not None and (not number(value) or not 0 <= value <= MAX_LAYER):
            return f"Layer out of range: {name} is {value!r}; use 0 to {MAX_LAYER}."
    if number(start_layer) and number(end_layer) and end_layer != 0 and not start_layer < end_layer:
        return (
            f"No layers chosen: end_layer ({end_layer}) must be above start_layer "
            f"({start_layer}), since end_layer itself is not included. Or set end_layer to 0 "
            "for the paper's layers."
        )
    for name, value in (("start_percent", start_percent), ("end_percent", end_percent)):
        if value is not None and (
            not number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0
        ):
            return f"Step range out of bounds: {name} is {value!r}; use 0 to 1."
    if number(start_percent) and number(end_percent) and start_percent > end_percent:
        return (
            f"Step range is backwards: start_percent ({start_percent}) is after end_percent "
            f"({end_percent}); 0 is the first step, 1 the last."
        )
    return True


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
        required["sac_scale"] = _sac_scale_input()
        required.update(tail)
        return {
            "required": required,
            "optional": {"allow_non_inpainting": _ALLOW_NON_INPAINTING_INPUT},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, sac_scale, start_layer, end_layer, start_percent, end_percent):
        return check_settings(sac_scale, start_layer, end_layer, start_percent, end_percent)

    def patch(
        self,
        model,
        layout,
        sac_scale,
        start_layer,
        end_layer,
        start_percent,
        end_percent,
        passes,
        allow_non_inpainting=False,
    ):
        return (
            apply_sac(
                model,
                layout,
                sac_scale,
                start_layer,
                end_layer,
                start_percent,
                end_percent,
                passes,
                "Analogist SAC",
                allow_non_inpainting,
            ),
        )


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
        return {
            "required": required,
            "optional": {
                "text_only_in_region": _REGION_CAM_INPUT,
                "allow_non_inpainting": _ALLOW_NON_INPAINTING_INPUT,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, start_layer, end_layer, start_percent, end_percent):
        return check_settings(None, start_layer, end_layer, start_percent, end_percent)

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
        allow_non_inpainting=False,
    ):
        return (
            apply_cam(
                model,
                layout,
                start_layer,
                end_layer,
                start_percent,
                end_percent,
                passes,
                "Analogist CAM",
                text_only_in_region,
                allow_non_inpainting,
            ),
        )


class AnalogistApply:
    DESCRIPTION = (
        "Analogist in one node: Self-Attention Cloning then Cross-Attention Masking on the "
        "same layers, steps and passes, exactly as the two nodes chained. B' changes the way "
        "A' changed from A, and only B' listens to the prompt. Returns a patched clone of "
        "the model; for different SAC and CAM settings use the two nodes instead."
    )
    CATEGORY = "Analogist"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The model with Analogist (SAC + CAM); feed it to the KSampler.",)
    SEARCH_ALIASES = [
        "analogy",
        "image analogy",
        "visual prompt",
        "before after",
        "in-context",
        "style transfer",
        "sac",
        "cam",
    ]

    @classmethod
    def INPUT_TYPES(cls):
        required, tail = _common_inputs("Analogist (SAC and CAM)")
        required["sac_scale"] = _sac_scale_input()
        required.update(tail)
        return {
            "required": required,
            "optional": {
                "text_only_in_region": _REGION_CAM_INPUT,
                "allow_non_inpainting": _ALLOW_NON_INPAINTING_INPUT,
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, sac_scale, start_layer, end_layer, start_percent, end_percent):
        return check_settings(sac_scale, start_layer, end_layer, start_percent, end_percent)

    def patch(
        self,
        model,
        layout,
        sac_scale,
        start_layer,
        end_layer,
        start_percent,
        end_percent,
        passes,
        text_only_in_region=False,
        allow_non_inpainting=False,
    ):
        node = "Analogist (SAC + CAM)"
        # CAM's own checks first, so a bad region setting stops before SAC's work.
        check_layout(layout)
        region_cam(layout, text_only_in_region, node)
        settings = (start_layer, end_layer, start_percent, end_percent, passes, node)
        with_sac = apply_sac(model, layout, sac_scale, *settings, allow_non_inpainting)
        return (apply_cam(with_sac, layout, *settings, text_only_in_region, allow_non_inpainting),)


def _sac_scale_input() -> tuple[str, dict]:
    return (
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
    "AnalogistApply": AnalogistApply,
    "AnalogistSACPatch": AnalogistSACPatch,
    "AnalogistCAMPatch": AnalogistCAMPatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnalogistApply": "Analogist (SAC + CAM)",
    "AnalogistSACPatch": "Analogist SAC",
    "AnalogistCAMPatch": "Analogist CAM",
}
