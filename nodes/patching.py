"""How SAC and CAM live on a ComfyUI model: per-call patch objects and the slot policy.

The math lives in ``analogist_attn`` (``sac_attention``, ``cam_projected_output``); this
module decides where and when it runs: which transformer blocks (walked from the model, in
the paper's numbering), which part of the schedule, which passes (cond / uncond), and how
it lives next to other nodes' patches.

* SAC is a self-attention *replace* patch (it needs q, k and v). A replace slot holds one
  function, so SAC refuses a slot another node already holds, and a guard run by the
  model patcher before every batch of UNet calls stops sampling if a node applied later
  replaced SAC on a chosen block, or put a patch there that SAC's key shadows.
* CAM is a cross-attention *output* patch: the rows CAM drops become the block's own
  output projection of a zero row, the others keep what the block computed. Output
  patches are a list, so the cross-attention slot stays free for IPAdapter and the like,
  in either order.
* Outside the step range, and for the CFG half the edit skips, ComfyUI's own attention
  runs (SAC) or the block's output is left alone (CAM): unpatched rows are exactly what
  ComfyUI computes.
"""

from __future__ import annotations

import inspect
import logging
import weakref
from collections import Counter
from collections.abc import Iterable
from functools import cache
from typing import Any

import torch

from ..analogist_attn.blocks import (
    BlockKey,
    describe_blocks,
    paper_layer_range,
    select_blocks,
    transformer_block_keys,
)
from ..analogist_attn.cam import cam_projected_output, cam_projected_output_rows
from ..analogist_attn.geometry import (
    PX_PER_LATENT,
    RegionTokensInside,
    latent_fits_grid,
    regions_for_block,
)
from ..analogist_attn.sac import PAPER_SAC_SCALE, sac_attention
from ..analogist_attn.sdpa import batch_mask_from_cond_or_uncond, plain_attention
from ..analogist_pixels.layout import GridLayout, check_layout

log = logging.getLogger("analogist")


PASSES = ("cond and uncond (paper)", "cond only", "uncond only")
MAX_LAYER = 200  # far above any UNet's transformer count (SDXL: 70); the real bound is checked
CAM_OUTPUT_SLOT = "attn2_output_patch"
SAC_GUARD_KEY = "analogist_sac_guard"


def check_passes(passes: Any) -> None:
    if passes not in PASSES:
        raise ValueError(
            f"passes={passes!r} is not a valid choice; use one of {list(PASSES)} "
            f"(the paper: {PASSES[0]!r})."
        )


class StepPassGate:
    """When an edit acts: a sigma range of the schedule and a choice of CFG passes."""

    def __init__(self, sigma_start: float, sigma_end: float, passes: str):
        check_passes(passes)
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.passes = passes
        self.on_cond = passes != "uncond only"
        self.on_uncond = passes != "cond only"
        self._last_sigmas: weakref.ref[torch.Tensor] | None = None
        self._last_active = True

    def active(self, extra_options: dict) -> bool:
        """True inside the step range (always, where the host gives no sigmas)."""
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

    def batch_mask(
        self, extra_options: dict, batch: int, device: torch.device
    ) -> torch.Tensor | None:
        """Batch entries to edit; ``None`` means all of them."""
        return batch_mask_from_cond_or_uncond(
            extra_options.get("cond_or_uncond") or [0], batch, self.on_cond, self.on_uncond, device
        )


class _Edit:
    """What SAC and CAM share: the layout, the gate and the per-block call counter.

    ``calls`` counts the calls that applied the edit, per block key, so a graph (or a
    test) can see exactly where it fired.
    """

    analogist_kind = ""

    def __init__(self, layout: GridLayout, gate: StepPassGate):
        layout = check_layout(layout)  # a wrong socket value gets a clear error
        # Every cell in whole px (all example pairs): token indices are cached on it.
        self.geometry = layout.geometry
        self.grid_size = (layout.grid_width, layout.grid_height)
        self.gate = gate
        self.calls: Counter[BlockKey] = Counter()

    def __repr__(self) -> str:
        return f"Analogist {self.analogist_kind.upper()} patch"

    def _check_latent(self, extra_options: dict) -> None:
        height, width = extra_options["original_shape"][-2:]
        grid_w, grid_h = self.grid_size
        # Latents are 1/8 of the image; a grid size rounds down to that when encoded.
        if not latent_fits_grid(width, height, grid_w, grid_h):
            raise ValueError(
                f"Analogist {self.analogist_kind.upper()}: the sampled latent is {width}x{height} "
                f"({width * PX_PER_LATENT}x{height * PX_PER_LATENT} px) but the layout is a {grid_w}x{grid_h} grid; "
                "sample the grid that GridCompose made (or a latent of the same proportions) "
                "and connect that GridCompose's layout."
            )


class SACAttention(_Edit):
    """SAC as a self-attention replace patch, shared by the chosen blocks."""

    analogist_kind = "sac"

    def __init__(
        self,
        layout: GridLayout,
        gate: StepPassGate,
        sac_scale: float = PAPER_SAC_SCALE,
        layers: dict[BlockKey, int] | None = None,
    ):
        super().__init__(layout, gate)
        self.sac_scale = sac_scale
        self.layers = dict(layers or {})  # block -> the paper's layer number, for messages

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict
    ) -> torch.Tensor:
        block = block_key(extra_options)
        _check_whole_token_map(q, k, extra_options, block, self.layers.get(block))
        if not self.gate.active(extra_options):
            return host_attention(q, k, v, extra_options)
        mask = self.gate.batch_mask(extra_options, q.shape[0], q.device)
        if mask is not None and not bool(mask.any()):
            return host_attention(q, k, v, extra_options)
        self._check_latent(extra_options)
        heads = extra_options["n_heads"]
        regions = regions_for_block(
            self.geometry, extra_options["original_shape"], q.shape[1], q.device
        )
        upcast = attention_precision(extra_options, q.dtype) == torch.float32
        self.calls[block] += 1
        if mask is None:
            return sac_attention(q, k, v, heads, regions, self.sac_scale, None, upcast)
        # The skipped CFG half gets the host's own attention, not the pack's.
        chosen, others = mask.nonzero().flatten(), (~mask).nonzero().flatten()
        edited = sac_attention(
            q[chosen], k[chosen], v[chosen], heads, regions, self.sac_scale, None, upcast
        )
        plain = host_attention(q[others], k[others], v[others], extra_options)
        out = edited.new_empty((q.shape[0],) + tuple(edited.shape[1:]))
        out.index_copy_(0, chosen, edited)
        out.index_copy_(0, others, plain.to(edited.dtype))
        return out


class CAMOutput(_Edit):
    """CAM as a cross-attention output patch (runs for every block; acts on the chosen ones).

    ``to_out`` holds weak references to each chosen block's ``attn2.to_out``: the rows CAM
    drops become that projection applied to a zero row, computed at each call, so a LoRA
    on its bias, low-VRAM weight casting and the model's dtype all apply as they would.
    """

    analogist_kind = "cam"

    def __init__(
        self,
        layout: GridLayout,
        gate: StepPassGate,
        to_out: dict[BlockKey, Any],
        region: RegionTokensInside | None = None,
    ):
        super().__init__(layout, gate)
        self.to_out = {key: _weak(module) for key, module in to_out.items()}
        self.region = region  # text only for the B' tokens in this region of interest

    @property
    def blocks(self) -> list[BlockKey]:
        return list(self.to_out)

    def without(self, blocks: Iterable[BlockKey]) -> CAMOutput | None:
        """A copy acting on fewer blocks (None if none are left); ``self`` is unchanged."""
        drop = set(blocks)
        rest = CAMOutput.__new__(CAMOutput)
        rest.__dict__.update(self.__dict__)
        rest.to_out = {key: ref for key, ref in self.to_out.items() if key not in drop}
        rest.calls = Counter()
        return rest if rest.to_out else None

    def __call__(self, n: torch.Tensor, extra_options: dict) -> torch.Tensor:
        block = block_key(extra_options)
        ref = self.to_out.get(block)
        if ref is None or not self.gate.active(extra_options):
            return n
        mask = self.gate.batch_mask(extra_options, n.shape[0], n.device)
        if mask is not None and not bool(mask.any()):
            return n
        self._check_latent(extra_options)
        regions = regions_for_block(
            self.geometry, extra_options["original_shape"], n.shape[1], n.device
        )
        to_out = ref()
        if to_out is None:
            raise RuntimeError(
                f"Analogist CAM: the model behind block {block} is gone; connect the model "
                "that CAMPatch patched (a reloaded checkpoint needs CAMPatch again)."
            )
        zero_row = to_out(n.new_zeros(1, 1, _in_features(to_out)))
        self.calls[block] += 1
        if self.region is not None:
            chunks = len(extra_options.get("cond_or_uncond") or [0])
            keep = self.region.keep_rows(
                regions.cam_keep, regions.b_prime, regions.h, regions.w, n.shape[0], chunks
            )
            return cam_projected_output_rows(n, keep, zero_row, mask)
        return cam_projected_output(n, regions, zero_row, mask)


def _weak(module: Any) -> weakref.ref:
    return weakref.ref(module)


def _in_features(to_out: Any) -> int:
    first: Any = to_out[0] if isinstance(to_out, torch.nn.Sequential) else to_out
    return int(first.in_features)


def _check_whole_token_map(
    q: torch.Tensor, k: torch.Tensor, extra_options: dict, block: BlockKey, layer: int | None
) -> None:
    """SAC needs every query of the block's token map in one call, with all the keys."""
    batch = extra_options.get("original_shape", [q.shape[0]])[0]
    if q.shape[0] == k.shape[0] == batch and q.shape[1] == k.shape[1]:
        return
    where = f"block {block}" + (f" (layer {layer})" if layer is not None else "")
    raise ValueError(
        f"Analogist SAC on {where}: this self-attention call has queries "
        f"{list(q.shape[:2])} (batch, tokens) but keys {list(k.shape[:2])} for a latent batch "
        f"of {batch}: another node tiled, merged or extended this block's tokens before "
        "attention. Likely HyperTile with max_depth >= 1 (it then tiles the queries of the "
        "deeper levels SAC uses; depth 0 tiles only the first level) or ToMe (it merges the "
        "queries of the first level). SAC needs the whole token map, A, A', B and B' in one "
        "call. Fix: set HyperTile's max_depth to 0, drop ToMe, or choose SAC layers outside "
        "the tiled or merged levels with start_layer/end_layer."
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


def host_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra_options: dict
) -> torch.Tensor:
    """The attention ComfyUI itself would run here (its kernel, precision and override)."""
    try:
        from comfy.ldm.modules import attention as comfy_attention
    except ImportError:
        return plain_attention(q, k, v, extra_options["n_heads"])
    fn = comfy_attention.optimized_attention
    kwargs: dict[str, Any] = {"attn_precision": extra_options.get("attn_precision")}
    if _takes_transformer_options(fn):  # ComfyUI 0.3.4x+: attention overrides (e.g. Sage)
        kwargs["transformer_options"] = extra_options
    return fn(q, k, v, extra_options["n_heads"], **kwargs)


@cache
def _takes_transformer_options(fn: Any) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_KEYWORD or p.name == "transformer_options" for p in params)


def replace_slots(model: Any, name: str) -> dict:
    return (
        model.model_options.get("transformer_options", {}).get("patches_replace", {}).get(name, {})
    )


def sigma_range(model: Any, start_percent: float, end_percent: float) -> tuple[float, float]:
    if not 0.0 <= start_percent <= end_percent <= 1.0:
        raise ValueError(
            f"start_percent={start_percent} and end_percent={end_percent}: need "
            "0 <= start_percent <= end_percent <= 1 (0 = first step, 1 = last step)"
        )
    sampling = model.get_model_object("model_sampling")
    return float(sampling.percent_to_sigma(start_percent)), float(
        sampling.percent_to_sigma(end_percent)
    )


def model_kind(model: Any) -> str:
    """The model's type for a message, e.g. ``Flux (config Flux)``."""
    inner = getattr(model, "model", model)
    config = getattr(inner, "model_config", None)
    kind = type(inner).__name__
    return kind + (f" (config {type(config).__name__})" if config is not None else "")


def chosen_blocks(model: Any, start_layer: int, end_layer: int, node: str) -> list[BlockKey]:
    """The blocks ``start_layer <= layer < end_layer``; ``end_layer == 0``: the paper's levels."""
    try:
        keys = transformer_block_keys(model.model)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{node}: cannot patch this {model_kind(model)} model: it has no UNet transformer "
            "blocks (input_blocks / middle_block / output_blocks) and is not Flux.1. Supported: "
            "SD1.x, SD2.x and SDXL UNets, ideally inpainting checkpoints, and Flux.1 Fill "
            "(experimental). Not supported: SD3, Flux.2, Chroma, video and other DiT models. "
            "Load an SD1.5 or SDXL inpainting checkpoint (or Flux.1 Fill)."
        ) from exc
    rule = ""
    if end_layer == 0:
        start_layer, end_layer = paper_layer_range(model.model)
        rule = " (end_layer 0: the paper's levels for this model)"
    try:
        blocks = select_blocks(keys, start_layer, end_layer)
    except ValueError as exc:
        raise ValueError(
            f"{node}: {exc} Or set end_layer to 0 for the paper's levels for this model."
        ) from exc
    log.info(
        "[Analogist] %s on layers %d..%d of %d%s: %s",
        node,
        start_layer,
        end_layer - 1,
        len(keys),
        rule,
        describe_blocks(model.model, blocks),
    )
    return blocks


INPAINT_IN_CHANNELS = 9  # 4 latent + 4 masked-image latent + 1 mask
ALLOW_NON_INPAINTING = "allow_non_inpainting"


def not_inpainting_message(node: str, detail: str) -> str:
    """The error a plain checkpoint gets, artist's words first (shared with the Flux route)."""
    return (
        "This checkpoint is not an inpainting model: pick an inpainting checkpoint such as "
        "sd-v1-5-inpainting.ckpt (or an SDXL inpainting or Flux.1 Fill model) in Load "
        f"Checkpoint, or turn on {ALLOW_NON_INPAINTING} on this node if you know what you do. "
        f"({node}: {detail}; Analogist fills B' by inpainting, so a plain model gives a B' "
        "that ignores the example.)"
    )


def check_inpainting(model: Any, node: str, allow_non_inpainting: bool = False) -> None:
    """Refuse a UNet that is not an inpainting one (unless allowed: then only a warning)."""
    unet = getattr(model.model, "diffusion_model", None)
    in_channels = getattr(unet, "in_channels", None)
    if in_channels is None or in_channels == INPAINT_IN_CHANNELS:
        return
    detail = (
        f"the model's UNet takes {in_channels} input channels, an inpainting UNet "
        f"{INPAINT_IN_CHANNELS}"
    )
    if not allow_non_inpainting:
        raise ValueError(not_inpainting_message(node, detail))
    log.warning(
        "[Analogist] %s: %s (%s is on). It will run, but Analogist's results depend on "
        "an inpainting checkpoint.",
        node,
        detail,
        ALLOW_NON_INPAINTING,
    )


def check_allow_flag(value: Any, node: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{node}: {ALLOW_NON_INPAINTING} must be true or false, got {value!r}.")
    return value


def plan(
    model: Any,
    node: str,
    start_layer: int,
    end_layer: int,
    start_percent: float,
    end_percent: float,
    allow_non_inpainting: bool = False,
) -> tuple[list[BlockKey], float, float]:
    """Validate a patch node's inputs: the blocks to patch and the sigma range to act in."""
    blocks = chosen_blocks(model, start_layer, end_layer, node)
    check_inpainting(model, node, allow_non_inpainting)
    return (blocks, *sigma_range(model, start_percent, end_percent))


def replacing_ours(patch: Any, kind: str, key: BlockKey) -> bool:
    """True (with a warning) when ``patch`` is our own ``kind`` patch, about to be replaced."""
    if getattr(patch, "analogist_kind", None) != kind:
        return False
    log.warning(
        "[Analogist] %s is already on block %s of this model; the new settings replace it.",
        kind.upper(),
        key,
    )
    return True


def describe_patch(patch: Any) -> str:
    owner = getattr(patch, "__module__", None) or type(patch).__module__
    name = getattr(patch, "__qualname__", None) or type(patch).__qualname__
    return f"{name} from {owner}"


def existing_patch(slots: dict, key: BlockKey) -> Any:
    """The patch that would run at ``key``: ComfyUI tries the 3-part key, then the 2-part."""
    return slots.get(key, slots.get(key[:2]))


def install_cam(patched: Any, fn: CAMOutput) -> None:
    """Put ``fn`` first among the attn2 output patches (CAM acts on the attention result).

    An earlier CAM on the same blocks is replaced there (with a warning); its other
    blocks keep it. Other nodes' output patches stay, in their order, after ours.
    """
    options = patched.model_options.setdefault("transformer_options", {})
    patches = dict(options.get("patches", {}))
    kept = []
    for other in patches.get(CAM_OUTPUT_SLOT, []):
        if getattr(other, "analogist_kind", None) == "cam":
            overlap = [key for key in fn.blocks if key in other.to_out]
            for key in overlap:
                replacing_ours(other, "cam", key)
            other = other.without(overlap) if overlap else other
            if other is None:
                continue
        kept.append(other)
    patches[CAM_OUTPUT_SLOT] = [fn, *kept]
    options["patches"] = patches


class SACGuard:
    """Model-patcher wrapper around each batch of UNet calls: SAC must be what runs.

    ``layers`` maps each block SAC was applied to onto its layer number. Before the UNet
    runs, the replace slots that call will use are checked: a later node may have replaced
    SAC on a block (e.g. SelfAttentionGuidance on the middle block), or put a 2-part-key
    patch there that SAC's 3-part key shadows (PerturbedAttentionGuidance does so inside
    its own extra pass). Either would silently lose one node's effect; this stops with a
    message instead. It runs for every batch of calls, so PAG's pass is seen too.
    """

    def __init__(self, layers: dict[BlockKey, int]):
        self.layers = dict(layers)

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        check_sac_slots(model_options.get("transformer_options", {}), self.layers)
        return executor(model, conds, x_in, timestep, model_options)


def check_sac_slots(transformer_options: dict, layers: dict[BlockKey, int]) -> None:
    slots = transformer_options.get("patches_replace", {}).get("attn1", {})
    for key, layer in layers.items():
        full, short = slots.get(key), slots.get(key[:2])
        if _is_sac(full):
            if short is not None and not _is_sac(short):
                raise ValueError(
                    f"Analogist SAC: {describe_patch(short)} patches self-attention on block {key[:2]} "
                    f"(layer {layer}), but SAC's patch on {key} takes precedence there (ComfyUI "
                    "runs a 3-part key before a 2-part one), so that node would silently do "
                    f"nothing. Fix: choose SAC layers without layer {layer} with "
                    "start_layer/end_layer, or remove one of the two nodes."
                )
            continue
        if full is None and _is_sac(short):
            continue
        other = full if full is not None else short
        what = describe_patch(other) if other is not None else "nothing (the slot was emptied)"
        raise ValueError(
            f"Analogist SAC: block {key} (layer {layer}) no longer runs SAC: a node applied "
            f"after SAC replaced it with {what}, so SAC would be lost there without a word. "
            f"Fix: choose SAC layers without layer {layer} with start_layer/end_layer, or "
            "remove that node; applied after it instead, SAC refuses the shared block with "
            "the same advice (a self-attention slot holds one function)."
        )


def _is_sac(patch: Any) -> bool:
    return getattr(patch, "analogist_kind", None) == "sac"


_warned_no_guard = False


def install_sac_guard(patched: Any, layers: dict[BlockKey, int]) -> None:
    """Register (or widen) the SAC guard on the patcher, where the host has wrappers."""
    global _warned_no_guard
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        WrappersMP = None
    if WrappersMP is None or not hasattr(patched, "add_wrapper_with_key"):
        if not _warned_no_guard:
            _warned_no_guard = True
            log.info(
                "[Analogist] This ComfyUI has no model-patcher wrappers: a node applied after "
                "SAC that replaces it on a chosen block cannot be detected. Apply SAC last."
            )
        return
    wrapper_type = WrappersMP.CALC_COND_BATCH
    merged: dict[BlockKey, int] = {}
    for old in patched.get_wrappers(wrapper_type, SAC_GUARD_KEY):
        merged.update(getattr(old, "layers", {}))
    merged.update(layers)
    patched.remove_wrappers_with_key(wrapper_type, SAC_GUARD_KEY)
    patched.add_wrapper_with_key(wrapper_type, SAC_GUARD_KEY, SACGuard(merged))
