"""SAC and CAM on Flux.1 (Fill) through ComfyUI's per-call attention override (experimental).

SACPatch and CAMPatch hand a Flux model here (``is_flux``). The math is
``analogist_attn.dit``; this module decides where it runs and how it shares the host.

The route, and why. ComfyUI (0.3.4x+) runs every attention call through ``wrap_attn``,
which hands it to ``transformer_options["optimized_attention_override"]`` when one is set,
with the block type and index in ``transformer_options``. That is the one place that sees
the rotated q and k of *every* Flux block as the model computes them, so the edit is
exactly DESIGN's and everything else in the block (modulation, QK norm, rotary, LoRA,
weight casting) stays ComfyUI's. The alternative, ``dit`` replace patches, would have to
copy the whole double/single block forward to get at its attention, and break with the
next change to ``layers.py``. The override does not say where text ends in a double
block, nor the latent size, so a ``DIFFUSION_MODEL`` wrapper records both once per model
call (``FluxCall``) in the options every block gets.

Sharing. The override is one slot. SAC and CAM on one model share one
:class:`FluxAttentionOverride`; whatever sat in the slot before it (another pack's
override) is kept as ``inner`` and runs every block and every row Analogist does not edit
(text rows, unedited image rows, other blocks, the rest of the schedule). Rows SAC or CAM
edit are computed with PyTorch's fused attention. A node applied later that takes the
slot over without calling Analogist's would silently drop it: the wrapper checks after
every model call that the override ran on each chosen block, and stops with a message
otherwise.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analogist_attn import defaults
from ..analogist_attn.dit import joint_attention, joint_regions
from ..analogist_attn.geometry import PX_PER_LATENT, RegionTokensInside, latent_fits_grid
from ..analogist_pixels.layout import GridLayout, check_layout
from .layout_check import install_layout_check
from .patching import not_inpainting_message

log = logging.getLogger("analogist")

OVERRIDE_SLOT = "optimized_attention_override"
CALL_KEY = "analogist_flux_call"
WRAPPER_KEY = "analogist_flux"
# The paper's SD1.5 choice (blocks 3..10 of 16) as a share of the depth: 3/16 to 11/16.
PAPER_SHARE = (
    defaults.START_LAYER / defaults.UNET_BLOCKS,
    defaults.END_LAYER / defaults.UNET_BLOCKS,
)
FLUX_FILL_IN_CHANNELS = 384  # 16 latent + 16 masked-image latent + 64 mask, x 2x2 patches


def is_flux(model: Any) -> bool:
    """A Flux.1 model (dev, schnell, Fill, ...) as ComfyUI builds it (not Flux.2, Chroma)."""
    inner = getattr(model, "model", None)
    diffusion = getattr(inner, "diffusion_model", None)
    return (
        type(inner).__name__ == "Flux"
        and type(inner).__module__ == "comfy.model_base"
        and type(diffusion).__module__ == "comfy.ldm.flux.model"
        and hasattr(diffusion, "double_blocks")
        and hasattr(diffusion, "single_blocks")
    )


def flux_block_names(model: Any) -> list[str]:
    """Every block in execution order: ``double 0..``, then ``single 0..``."""
    diffusion = model.model.diffusion_model
    return [f"double {i}" for i in range(len(diffusion.double_blocks))] + [
        f"single {i}" for i in range(len(diffusion.single_blocks))
    ]


def flux_default_layers(n_blocks: int) -> tuple[int, int]:
    """``(start, end)``: the paper's share of the depth (19 + 38 blocks: 11, 39)."""
    return round(n_blocks * PAPER_SHARE[0]), round(n_blocks * PAPER_SHARE[1])


def describe_flux_layers(names: list[str], layers: range) -> str:
    chosen = [names[i] for i in layers]
    parts = []
    for kind in ("double", "single"):
        numbers = [int(n.split()[1]) for n in chosen if n.startswith(kind)]
        if numbers:
            parts.append(
                f"{kind} blocks {numbers[0]}-{numbers[-1]}"
                if len(numbers) > 1
                else f"{kind} block {numbers[0]}"
            )
    return ", ".join(parts)


def check_host(node: str) -> None:
    """The Flux route needs ComfyUI's attention override and model-patcher wrappers."""
    try:
        from comfy.ldm.modules import attention
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        attention, WrappersMP = None, None
    if (
        attention is None
        or not hasattr(attention, "wrap_attn")
        or not hasattr(WrappersMP, "DIFFUSION_MODEL")
    ):
        raise ValueError(
            f"{node}: SAC/CAM on Flux need ComfyUI's per-call attention override "
            "(transformer_options['optimized_attention_override'], ComfyUI 0.3.4x or newer); "
            "this ComfyUI has none. Update ComfyUI, or use an SD1.5 or SDXL inpainting model."
        )


def chosen_flux_layers(model: Any, start_layer: int, end_layer: int, node: str) -> range:
    names = flux_block_names(model)
    rule = ""
    if end_layer == 0:
        start_layer, end_layer = flux_default_layers(len(names))
        rule = " (end_layer 0: the pack's starting point for Flux, not a tested choice)"
    if not 0 <= start_layer < end_layer <= len(names):
        n_double = sum(name.startswith("double") for name in names)
        raise ValueError(
            f"{node}: layer range start={start_layer}, end={end_layer} (end exclusive) is empty or "
            f"outside this Flux model's {len(names)} blocks: valid layers are 0..{len(names) - 1} "
            f"(0-{n_double - 1} double blocks, {n_double}-{len(names) - 1} single blocks), so use "
            f"0 <= start < end <= {len(names)}. Or set end_layer to 0 for the pack's starting point "
            f"for Flux ({'..'.join(str(x) for x in flux_default_layers(len(names)))}, end exclusive)."
        )
    layers = range(start_layer, end_layer)
    log.info(
        "[Analogist] %s on Flux layers %d..%d of %d%s: %s (experimental)",
        node,
        start_layer,
        end_layer - 1,
        len(names),
        rule,
        describe_flux_layers(names, layers),
    )
    return layers


def check_fill(model: Any, node: str, allow_non_inpainting: bool = False) -> None:
    """Refuse a Flux model that is not Flux.1 Fill (unless allowed: then only a warning)."""
    channels = getattr(model.model.diffusion_model, "in_channels", None)
    if channels is None or channels == FLUX_FILL_IN_CHANNELS:
        return
    detail = (
        f"this Flux model takes {channels} input channels, not Flux.1 Fill's "
        f"{FLUX_FILL_IN_CHANNELS} (image + masked image + mask)"
    )
    if not allow_non_inpainting:
        raise ValueError(not_inpainting_message(node, detail))
    log.warning(
        "[Analogist] %s: %s (allow_non_inpainting is on). It will run, but Analogist needs "
        "an inpainting model to fill B'.",
        node,
        detail,
    )


@dataclass
class FluxEdit:
    """SAC (``scale`` set) or CAM on a set of layers, with its step/pass gate.

    ``calls`` counts, per layer, the attention calls the edit was applied to. ``region``
    (CAM only): text only for the B' tokens inside this region of interest.
    """

    kind: str
    layers: frozenset[int]
    gate: Any  # nodes.attention.StepPassGate
    scale: float | None = None
    calls: Counter = field(default_factory=Counter)
    region: RegionTokensInside | None = None


@dataclass
class FluxCall:
    """What one model call adds to the options: latent size, text length, blocks seen."""

    latent_hw: tuple[int, int]
    text_tokens: int
    seen: set = field(default_factory=set)


class FluxAttentionOverride:
    """The attention override of a Flux model carrying Analogist's SAC and/or CAM.

    Called by ComfyUI's ``wrap_attn`` as ``override(func, q, k, v, heads, **kwargs)`` for
    every attention call; ``inner`` is the override that was in the slot before (or None:
    then ``func``, the host's own attention, runs the unedited parts).
    """

    analogist_kind = "flux"

    def __init__(
        self,
        layout: GridLayout,
        n_double: int,
        inner: Any = None,
        sac: FluxEdit | None = None,
        cam: FluxEdit | None = None,
    ):
        layout = check_layout(layout)
        self.geometry = layout.geometry
        self.grid_size = (layout.grid_width, layout.grid_height)
        self.n_double = n_double
        self.inner = inner
        self.sac = sac
        self.cam = cam

    def __repr__(self) -> str:
        kinds = [e.kind.upper() for e in (self.sac, self.cam) if e is not None]
        return f"Analogist Flux attention override ({' + '.join(kinds)})"

    def with_edit(self, layout: GridLayout, edit: FluxEdit) -> FluxAttentionOverride:
        """A new override with ``edit`` added (an earlier one of its kind is replaced)."""
        if layout.geometry != self.geometry:
            raise ValueError(
                f"Analogist {edit.kind.upper()}: this Flux model already has Analogist's "
                "SAC or CAM with another layout; connect the same GridCompose layout to both."
            )
        if getattr(self, edit.kind) is not None:
            log.warning(
                "[Analogist] %s is already on this Flux model; the new settings replace it.",
                edit.kind.upper(),
            )
        new = FluxAttentionOverride(layout, self.n_double, self.inner, self.sac, self.cam)
        setattr(new, edit.kind, edit)
        return new

    @property
    def layers(self) -> set[int]:
        return set().union(*(e.layers for e in (self.sac, self.cam) if e is not None))

    def layer(self, options: dict) -> int | None:
        kind, index = options.get("block_type"), options.get("block_index")
        if index is None or kind not in ("double", "single"):
            return None
        return int(index) + (self.n_double if kind == "single" else 0)

    def __call__(self, func, *args, **kwargs):
        options = kwargs.get("transformer_options") or {}
        layer = self.layer(options)
        if layer is None or layer not in self.layers:
            return self._host(func, *args, **kwargs)
        call = options.get(CALL_KEY)
        if call is not None:
            call.seen.add(layer)
        edits = [
            e
            for e in (self.sac, self.cam)
            if e is not None and layer in e.layers and e.gate.active(options)
        ]
        if not edits:
            return self._host(func, *args, **kwargs)
        return self._edited(func, layer, edits, call, options, args, kwargs)

    def _host(self, func, *args, **kwargs):
        if self.inner is not None:
            return self.inner(func, *args, **kwargs)
        return func(*args, **kwargs)

    def _edited(self, func, layer, edits, call, options, args, kwargs):
        q, k, v, heads = args[:4]
        rest = args[4:]
        mask = kwargs.get("mask", rest[0] if rest else None)
        where = f"Flux layer {layer}"
        if mask is not None:
            raise ValueError(
                f"Analogist SAC/CAM on {where}: this attention call has an attention mask "
                "(a text encoder's padding mask or a regional-prompt node). SAC and CAM on Flux "
                "do not support one yet; remove that node or the mask."
            )
        if call is None:
            raise ValueError(
                f"Analogist SAC/CAM on {where}: the model call did not pass through Analogist's "
                "Flux wrapper, so the text length and latent size are unknown. Sample the model "
                "SACPatch/CAMPatch return with a ComfyUI sampler."
            )
        skip_reshape = kwargs.get("skip_reshape", False)
        if not skip_reshape:  # [B, L, H*D] -> [B, H, L, D]
            q, k, v = (t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
        self._check_sequence(where, q, call, options)
        regions = joint_regions(self.geometry, call.latent_hw, call.text_tokens, q.device)
        host_kwargs = {
            key: value
            for key, value in kwargs.items()
            if key not in ("mask", "skip_output_reshape")
        }
        host_kwargs["skip_reshape"] = True

        def plain(q_part, k_part, v_part):
            out = self._host(func, q_part, k_part, v_part, heads, *rest[1:], **host_kwargs)
            return out.reshape(q_part.shape[0], q_part.shape[2], heads, -1)

        batch = q.shape[0]
        flags = []
        for edit in edits:
            chosen = edit.gate.batch_mask(options, batch, q.device)
            flags.append(
                torch.ones(batch, dtype=torch.bool, device=q.device) if chosen is None else chosen
            )
        # "Text only in the region": which B' tokens keep the text, per batch entry.
        text_rows = _text_in_b_prime(edits, regions, batch, options)
        keys = [tuple(bool(f[i]) for f in flags) + (text_rows[1][i],) for i in range(batch)]
        out = v.new_empty(batch, q.shape[2], heads, v.shape[-1])
        for key in dict.fromkeys(keys):
            combo = key[:-1]
            entries = torch.tensor([i for i in range(batch) if keys[i] == key], device=q.device)
            active = [edit for edit, on in zip(edits, combo, strict=True) if on]
            sac = next((e for e in active if e.kind == "sac"), None)
            cam = any(e.kind == "cam" for e in active)
            qs, ks, vs = (t.index_select(0, entries) for t in (q, k, v))
            if not active:
                part = plain(qs, ks, vs)
            else:
                part = joint_attention(
                    qs,
                    ks,
                    vs,
                    regions,
                    sac.scale if sac else None,
                    cam,
                    plain,
                    text_in_b_prime=text_rows[0][key[-1]] if cam else None,
                )
                for edit in active:
                    edit.calls[layer] += 1
            out.index_copy_(0, entries, part.to(out.dtype))
        if kwargs.get("skip_output_reshape", False):
            return out.transpose(1, 2)
        return out.reshape(batch, q.shape[2], -1)

    def _check_sequence(self, where: str, q: torch.Tensor, call: FluxCall, options: dict) -> None:
        latent_h, latent_w = call.latent_hw
        grid_w, grid_h = self.grid_size
        if not latent_fits_grid(latent_w, latent_h, grid_w, grid_h):
            raise ValueError(
                f"Analogist SAC/CAM on Flux: the sampled latent is {latent_w}x{latent_h} "
                f"({latent_w * PX_PER_LATENT}x{latent_h * PX_PER_LATENT} px) but the layout is "
                f"a {grid_w}x{grid_h} grid; "
                "sample the grid that GridCompose made and connect that GridCompose's layout."
            )
        image = math.ceil(latent_h / 2) * math.ceil(latent_w / 2)
        tokens = q.shape[2]
        img_slice = options.get("img_slice")
        if tokens != call.text_tokens + image or (
            options.get("block_type") == "single"
            and img_slice is not None
            and list(img_slice) != [call.text_tokens, tokens]
        ):
            raise ValueError(
                f"Analogist SAC/CAM on {where}: the joint sequence has {tokens} tokens, not "
                f"{call.text_tokens} text + {image} image tokens. Something added tokens to the "
                "sequence (reference latents as in Flux Kontext, or another node's extra tokens); "
                "SAC/CAM on Flux support the plain Fill graph only."
            )


def _text_in_b_prime(edits, regions, batch: int, options: dict):
    """``(flags, row_of)``: ``flags[row_of[e]]`` marks the B' tokens of batch entry ``e``
    that keep the text (None: all of B'), from CAM's region of interest."""
    cam = next((e for e in edits if e.kind == "cam"), None)
    if cam is None or cam.region is None:
        return [None], [0] * batch
    image = regions.image
    chunks = len(options.get("cond_or_uncond") or [0])
    keep = cam.region.keep_rows(image.cam_keep, image.b_prime, image.h, image.w, batch, chunks)
    flags = keep[:, image.b_prime]  # [batch or 1, B' tokens]
    if flags.shape[0] == 1:
        return [flags[0]], [0] * batch
    return list(flags), list(range(batch))


class FluxCallCapture:
    """``DIFFUSION_MODEL`` wrapper: records the latent size and text length of each call,
    and afterwards checks that Analogist's override ran on every chosen block."""

    def __init__(self, layers: set[int], names: list[str]):
        self.layers = set(layers)
        self.names = list(names)

    def __call__(
        self,
        executor,
        x,
        timestep,
        context,
        y=None,
        guidance=None,
        ref_latents=None,
        control=None,
        transformer_options=None,
        **kwargs,
    ):
        transformer_options = transformer_options or {}
        call = FluxCall((int(x.shape[-2]), int(x.shape[-1])), int(context.shape[1]))
        options = {**transformer_options, CALL_KEY: call}
        out = executor(x, timestep, context, y, guidance, ref_latents, control, options, **kwargs)
        missing = sorted(self.layers - call.seen)
        if missing:
            slot = transformer_options.get(OVERRIDE_SLOT)
            raise ValueError(
                "Analogist SAC/CAM on Flux did not run on "
                f"{', '.join(f'layer {i} ({self.names[i]})' for i in missing[:6])}"
                f"{' ...' if len(missing) > 6 else ''}: a node applied after SACPatch/CAMPatch "
                f"replaced ComfyUI's attention override (now {slot!r}) without calling the one "
                "it found, or replaced or skipped those blocks (a block cache such as TeaCache "
                "or First Block Cache skips them on some steps). Its effect and Analogist's cannot both hold "
                "silently: apply that node before SACPatch/CAMPatch (Analogist then keeps it for "
                "everything it does not edit), or remove one of the two."
            )
        return out


def patch_flux(
    model: Any,
    node: str,
    kind: str,
    layout: GridLayout,
    start_layer: int,
    end_layer: int,
    gate: Any,
    scale: float | None = None,
    region: RegionTokensInside | None = None,
    allow_non_inpainting: bool = False,
) -> Any:
    """A clone of ``model`` with SAC or CAM (``kind``) on Flux layers ``start..end-1``;
    ``region``: CAM's "text only in the region"; a model that is not Flux.1 Fill is refused
    unless ``allow_non_inpainting``."""
    check_host(node)
    layers = chosen_flux_layers(model, start_layer, end_layer, node)
    check_fill(model, node, allow_non_inpainting)
    if not getattr(gate, "on_cond", True):
        log.warning(
            "[Analogist] %s on Flux with passes = %r: Flux Fill's usual CFG 1 samples one "
            "pass, the prompt's (FluxGuidance steers it), so this edit only acts if the "
            "KSampler's cfg is above 1. Use 'cond and uncond (paper)' or 'cond only'.",
            node,
            getattr(gate, "passes", "uncond only"),
        )
    from comfy.patcher_extension import WrappersMP

    patched = model.clone()
    options = patched.model_options.setdefault("transformer_options", {})
    existing = options.get(OVERRIDE_SLOT)
    edit = FluxEdit(kind, frozenset(layers), gate, scale, region=region)
    names = flux_block_names(model)
    if isinstance(existing, FluxAttentionOverride):
        override = existing.with_edit(layout, edit)
    else:
        if patched.get_wrappers(WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY):
            raise ValueError(
                f"{node}: this Flux model already has Analogist's SAC or CAM, but another node "
                f"put its own attention override ({existing!r}) over it since. Apply SACPatch and "
                "CAMPatch next to each other (the other node before or after both)."
            )
        override = FluxAttentionOverride(
            layout, len(model.model.diffusion_model.double_blocks), existing
        )
        override = override.with_edit(layout, edit)
        if existing is not None:
            log.info(
                "[Analogist] %s: the model already has an attention override (%r); Analogist "
                "keeps it for every block, row and step it does not edit.",
                node,
                existing,
            )
    options[OVERRIDE_SLOT] = override
    patched.remove_wrappers_with_key(WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(
        WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, FluxCallCapture(override.layers, names)
    )
    install_layout_check(patched, node, layout, mask=False)  # the start latent's cells
    return patched
