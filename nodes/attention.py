"""SACPatch and CAMPatch: attention replace patches on a clone of the loaded model.

The math lives in ``analogist_attn`` (``sac_attention``, ``cam_attention``); this module
decides where and when it runs: which transformer blocks (walked from the model, in the
paper's numbering), which part of the schedule, which passes (cond / uncond), and how it
lives next to other packs' patches in the same replace slots.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch

from ..analogist_attn.attention import batch_mask_from_cond_or_uncond, plain_attention
from ..analogist_attn.blocks import (
    PAPER_END_LAYER,
    PAPER_START_LAYER,
    BlockKey,
    select_blocks,
    transformer_block_keys,
)
from ..analogist_attn.cam import cam_attention, cam_mask_output
from ..analogist_attn.layout import LAYOUT_TYPE, GridLayout, check_layout
from ..analogist_attn.sac import PAPER_SAC_SCALE, sac_attention
from ..analogist_attn.tokens import regions_for_block

log = logging.getLogger("analogist")

PASSES = ("cond and uncond (paper)", "cond only", "uncond only")
MAX_LAYER = 200  # far above any UNet's transformer count (SDXL: 70); the real bound is checked

ReplaceFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict], torch.Tensor]


class AnalogistAttentionPatch:
    """One replace patch (SAC on attn1 or CAM on attn2), shared by the chosen blocks.

    ``calls`` counts the calls that applied the edit, per block key, so a graph (or a
    test) can see exactly where it fired.
    """

    def __init__(
        self,
        kind: str,
        layout: GridLayout,
        sigma_start: float,
        sigma_end: float,
        passes: str,
        sac_scale: float = PAPER_SAC_SCALE,
        inner: dict[BlockKey, ReplaceFn] | None = None,
    ):
        # Marks our patches in a model's replace slots (the class may be imported twice).
        self.analogist_kind = kind
        layout = check_layout(layout)  # a wrong socket value gets a clear error
        self.fractions = layout.cell_fractions()
        self.grid_size = (layout.grid_width, layout.grid_height)
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.on_cond = passes != "uncond only"
        self.on_uncond = passes != "cond only"
        self.sac_scale = sac_scale
        # Other packs' attn2 patches that CAM wraps, by block.
        self.inner: dict[BlockKey, ReplaceFn] = dict(inner or {})
        self.calls: Counter[BlockKey] = Counter()
        self._last_sigmas: weakref.ref[torch.Tensor] | None = None
        self._last_active = True

    def __repr__(self) -> str:
        return f"Analogist {self.analogist_kind.upper()} patch"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
        block = block_key(extra_options)
        inner = self.inner.get(block)
        if not self._active(extra_options):
            return inner(q, k, v, extra_options) if inner else host_attention(q, k, v, extra_options)
        self._check_latent(extra_options)
        heads = extra_options["n_heads"]
        regions = regions_for_block(self.fractions, extra_options["original_shape"], q.shape[1], q.device)
        mask = batch_mask_from_cond_or_uncond(
            extra_options.get("cond_or_uncond") or [0], q.shape[0], self.on_cond, self.on_uncond, q.device
        )
        upcast = attention_precision(extra_options, q.dtype) == torch.float32
        self.calls[block] += 1
        if self.analogist_kind == "sac":
            return sac_attention(q, k, v, heads, regions, self.sac_scale, mask, upcast)
        if inner is not None:  # rows are independent in cross-attention: wrapping is exact
            return cam_mask_output(inner(q, k, v, extra_options), regions, mask)
        return cam_attention(q, k, v, heads, regions, mask, upcast)

    def _active(self, extra_options: dict) -> bool:
        sigmas = extra_options.get("sigmas")
        if sigmas is None:
            return True
        # Every block of one UNet call gets the same sigmas tensor; reading its value
        # once per call (not once per block) spares a GPU sync in each patched block.
        if self._last_sigmas is None or self._last_sigmas() is not sigmas:
            self._last_sigmas = weakref.ref(sigmas)  # no tensor kept alive or deep-copied
            sigma = float(sigmas.detach().flatten()[0])
            self._last_active = self.sigma_end <= sigma <= self.sigma_start
        return self._last_active

    def _check_latent(self, extra_options: dict) -> None:
        height, width = extra_options["original_shape"][-2:]
        grid_w, grid_h = self.grid_size
        # Latents are 1/8 of the image; a grid size rounds down to that when encoded.
        if abs(width / height - grid_w / grid_h) > 8 / min(grid_w, grid_h):
            raise ValueError(
                f"Analogist {self.analogist_kind.upper()}: the sampled latent is {width}x{height} "
                f"({width * 8}x{height * 8} px) but the layout is a {grid_w}x{grid_h} grid; "
                "sample the grid that GridCompose made (or a latent of the same proportions) "
                "and connect that GridCompose's layout."
            )


def block_key(extra_options: dict) -> BlockKey:
    block = extra_options.get("block") or ("?", -1)
    return (block[0], block[1], extra_options.get("block_index", 0))


def attention_precision(extra_options: dict, dtype: torch.dtype) -> torch.dtype | None:
    """ComfyUI's attention precision for this call (its upcast flags included)."""
    precision = extra_options.get("attn_precision")
    try:
        from comfy.ldm.modules.attention import get_attn_precision
    except ImportError:
        return precision
    try:
        return get_attn_precision(precision, dtype)  # current ComfyUI
    except TypeError:
        return get_attn_precision(precision)  # older ComfyUI (0.0.1 on the registry)


def host_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict) -> torch.Tensor:
    """The attention ComfyUI itself would run: outside the edit the image is unchanged."""
    heads = extra_options["n_heads"]
    try:
        from comfy.ldm.modules.attention import optimized_attention
    except ImportError:
        return plain_attention(q, k, v, heads)
    return optimized_attention(q, k, v, heads, attn_precision=extra_options.get("attn_precision"))


def replace_slots(model: Any, name: str) -> dict:
    return model.model_options.get("transformer_options", {}).get("patches_replace", {}).get(name, {})


def sigma_range(model: Any, start_percent: float, end_percent: float) -> tuple[float, float]:
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(
            f"start_percent={start_percent} and end_percent={end_percent}: need "
            "0 <= start_percent <= end_percent <= 1 (0 = first step, 1 = last step)"
        )
    sampling = model.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_percent)), float(sampling.percent_to_sigma(end_percent))


def chosen_blocks(model: Any, start_layer: int, end_layer: int, node: str) -> list[BlockKey]:
    try:
        keys = transformer_block_keys(model.model)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{node}: this model has no UNet transformer blocks to patch ({exc}). Analogist "
            "needs a UNet diffusion model: SD1.x / SD2.x / SDXL, ideally an inpainting one."
        ) from exc
    try:
        return select_blocks(keys, start_layer, end_layer)
    except ValueError as exc:
        raise ValueError(f"{node}: {exc}") from exc


def warn_if_not_inpainting(model: Any, node: str) -> None:
    unet = getattr(model.model, "diffusion_model", None)
    in_channels = getattr(unet, "in_channels", None)
    if in_channels is not None and in_channels <= 4:
        log.warning(
            "[Analogist] %s: the model has %s input channels, not an inpainting model (9). "
            "It will run, but Analogist's results depend on an SD inpainting checkpoint.",
            node,
            in_channels,
        )


def plan(
    model: Any, node: str, start_layer: int, end_layer: int, start_percent: float, end_percent: float
) -> tuple[list[BlockKey], float, float]:
    """Validate a patch node's inputs: the blocks to patch and the sigma range to act in."""
    blocks = chosen_blocks(model, start_layer, end_layer, node)
    warn_if_not_inpainting(model, node)
    return (blocks, *sigma_range(model, start_percent, end_percent))


def _replacing_ours(patch: Any, kind: str, key: BlockKey) -> bool:
    """True (with a warning) when ``patch`` is our own ``kind`` patch, about to be replaced."""
    if getattr(patch, "analogist_kind", None) != kind:
        return False
    log.warning(
        "[Analogist] %s is already on block %s of this model; the new settings replace it.",
        kind.upper(),
        key,
    )
    return True


def _describe(patch: Any) -> str:
    owner = getattr(patch, "__module__", None) or type(patch).__module__
    name = getattr(patch, "__qualname__", None) or type(patch).__qualname__
    return f"{name} from {owner}"


def _existing(slots: dict, key: BlockKey) -> Any:
    """The patch that would run at ``key``: ComfyUI tries the 3-part key, then the 2-part."""
    return slots.get(key, slots.get(key[:2]))


def _tooltip_layers(what: str) -> tuple[str, str]:
    start = (
        f"First transformer block that gets {what}, counted in execution order "
        "(SD1.5: 0-5 input, 6 middle, 7-15 output). Paper: 3."
    )
    end = f"Block after the last one that gets {what} (end is exclusive). Paper: 11, i.e. blocks 3..10."
    return start, end


def _common_inputs(what: str) -> dict:
    start_tip, end_tip = _tooltip_layers(what)
    return {
        "model": ("MODEL", {"tooltip": "The diffusion model to patch (an SD1.5 inpainting checkpoint in the paper). It is cloned; the input stays unpatched."}),
        "layout": (LAYOUT_TYPE, {"tooltip": "Where A, A', B and B' sit in the grid. Connect the layout from the same GridCompose whose grid is sampled."}),
    }, {
        "start_layer": ("INT", {"default": PAPER_START_LAYER, "min": 0, "max": MAX_LAYER, "tooltip": start_tip}),
        "end_layer": ("INT", {"default": PAPER_END_LAYER, "min": 1, "max": MAX_LAYER, "tooltip": end_tip}),
        "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": f"Part of the sampling schedule where {what} acts: from this fraction (0 = first step)."}),
        "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "...to this fraction (1 = last step). Paper: the whole schedule, 0 to 1."}),
        "passes": (list(PASSES), {"default": PASSES[0], "tooltip": f"Which CFG passes get {what}: both (the paper), only the prompt (cond) pass, or only the negative (uncond) pass."}),
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
        required["sac_scale"] = ("FLOAT", {"default": PAPER_SAC_SCALE, "min": 0.0, "max": 10.0, "step": 0.05, "tooltip": "Scale s of the cloned attention logits (S[A',B'] = s * S[A,B]). Paper: 1.3; higher follows the example more strongly."})
        required.update(tail)
        return {"required": required}

    def patch(self, model, layout, sac_scale, start_layer, end_layer, start_percent, end_percent, passes):
        node = "Analogist SAC"
        blocks, sigma_start, sigma_end = plan(model, node, start_layer, end_layer, start_percent, end_percent)
        slots = replace_slots(model, "attn1")
        for key in blocks:
            existing = _existing(slots, key)
            if existing is None or _replacing_ours(existing, "sac", key):
                continue
            raise ValueError(
                f"{node}: block {key} already has a self-attention replacement "
                f"({_describe(existing)}). SAC cannot wrap another self-attention replacement "
                "exactly; apply SAC before that node, on a model without it, or choose other "
                "layers with start_layer/end_layer."
            )
        fn = AnalogistAttentionPatch("sac", layout, sigma_start, sigma_end, passes, sac_scale=sac_scale)
        patched = model.clone()
        for key in blocks:
            patched.set_model_attn1_replace(fn, *key)
        return (patched,)


class AnalogistCAMPatch:
    DESCRIPTION = (
        "Cross-Attention Masking (Analogist, SIGGRAPH 2024): in the chosen cross-attention "
        "layers only B' listens to the text prompt; A, A' and B take nothing from it. "
        "Wraps another pack's cross-attention patch on the same block if there is one. "
        "Returns a patched clone of the model."
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
        return {"required": required}

    def patch(self, model, layout, start_layer, end_layer, start_percent, end_percent, passes):
        node = "Analogist CAM"
        blocks, sigma_start, sigma_end = plan(model, node, start_layer, end_layer, start_percent, end_percent)
        slots = replace_slots(model, "attn2")
        inner: dict[BlockKey, ReplaceFn] = {}
        for key in blocks:
            existing = _existing(slots, key)
            if existing is None:
                continue
            if _replacing_ours(existing, "cam", key):
                if key in existing.inner:  # keep what the earlier CAM wrapped
                    inner[key] = existing.inner[key]
            else:
                inner[key] = existing
        fn = AnalogistAttentionPatch("cam", layout, sigma_start, sigma_end, passes, inner=inner)
        patched = model.clone()
        for key in blocks:
            patched.set_model_attn2_replace(fn, *key)
        return (patched,)


NODE_CLASS_MAPPINGS = {
    "AnalogistSACPatch": AnalogistSACPatch,
    "AnalogistCAMPatch": AnalogistCAMPatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "AnalogistSACPatch": "Analogist Self-Attention Cloning",
    "AnalogistCAMPatch": "Analogist Cross-Attention Masking",
}
