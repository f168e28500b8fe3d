"""SAC and CAM as diffusers attention processors, and where they go in a UNet.

The math is ``analogist_attn``'s (``sac_attention``, ``cam_attention``: exact, fused, no
N x N matrix); a processor only does what diffusers' own ``AttnProcessor2_0`` does
around it (projections, output projection, residual) and finds the grid's regions on
the block's token map. That map's size follows from the latent size (the grid's size
divided by the VAE factor) and the number of tokens in the call, exactly as the
ComfyUI patch derives it from ``original_shape``.

Blocks are numbered as in the paper: the UNet's transformer blocks in execution order
(down blocks, mid block, up blocks; SD1.5: 0-5 down, 6 mid, 7-15 up). This module does
not import diffusers: it works on the modules' attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..analogist_attn.blocks import PAPER_END_LAYER, PAPER_START_LAYER, BlockKey, select_blocks
from ..analogist_attn.cam import cam_attention
from ..analogist_attn.geometry import VAE_FACTOR, RegionTokens, regions_for_block
from ..analogist_attn.sac import PAPER_SAC_SCALE, sac_attention
from ..analogist_pixels.layout import GridLayout

PAPER_LAYERS = (PAPER_START_LAYER, PAPER_END_LAYER)

# diffusers' own processors that compute plain attention: replacing one on a chosen block
# loses nothing. Anything else (IP-Adapter, LoRA-era custom processors, another pack's
# edit) is someone's change, which SAC/CAM refuse to overwrite silently.
_PLAIN_PROCESSORS = frozenset(
    {
        "AttnProcessor",
        "AttnProcessor2_0",
        "AttnProcessorNPU",
        "FusedAttnProcessor2_0",
        "SlicedAttnProcessor",
        "XFormersAttnProcessor",
    }
)


@dataclass(frozen=True, eq=False)
class TransformerLayer:
    """One transformer block of a diffusers UNet, with its number in the paper's order.

    ``name`` is the module path (``down_blocks.1.attentions.0.transformer_blocks.0``);
    ``comfy_key`` is ComfyUI's patch key of the same block (``("input", 4, 0)``), so the
    two hosts' numberings can be compared.
    """

    index: int
    name: str
    comfy_key: BlockKey
    block: Any = field(repr=False)


def transformer_layers(pipe_or_unet: Any) -> list[TransformerLayer]:
    """Every transformer block of the UNet, in execution order (the paper's numbering)."""
    unet = find_unet(pipe_or_unet)
    layers: list[TransformerLayer] = []
    comfy_input = 1  # ComfyUI's input block 0 is conv_in
    stages: list[tuple[str, str, list[Any]]] = [
        ("down_blocks", "input", list(unet.down_blocks)),
        ("mid_block", "middle", [unet.mid_block] if unet.mid_block is not None else []),
        ("up_blocks", "output", list(unet.up_blocks)),
    ]
    comfy_output = 0
    for stage, comfy_stage, blocks in stages:
        for number, unet_block in enumerate(blocks):
            prefix = stage if stage == "mid_block" else f"{stage}.{number}"
            attentions = list(getattr(unet_block, "attentions", None) or [])
            for j, transformer in enumerate(attentions):
                if comfy_stage == "input":
                    comfy_number = comfy_input + j
                elif comfy_stage == "middle":
                    comfy_number = 0
                else:
                    comfy_number = comfy_output + j
                for k, block in enumerate(getattr(transformer, "transformer_blocks", [])):
                    layers.append(
                        TransformerLayer(
                            index=len(layers),
                            name=f"{prefix}.attentions.{j}.transformer_blocks.{k}",
                            comfy_key=(comfy_stage, comfy_number, k),
                            block=block,
                        )
                    )
            # ComfyUI gives every resnet (with its transformer) its own input/output block,
            # and a down block's downsampler one more; an up block's upsampler shares the
            # last one.
            resnets = len(getattr(unet_block, "resnets", None) or [])
            if comfy_stage == "input":
                comfy_input += resnets + (1 if getattr(unet_block, "downsamplers", None) else 0)
            elif comfy_stage == "output":
                comfy_output += resnets
    return layers


def find_unet(pipe_or_unet: Any) -> Any:
    """The ``UNet2DConditionModel`` of a pipeline, or the UNet itself."""
    unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
    if not all(hasattr(unet, name) for name in ("down_blocks", "mid_block", "up_blocks")):
        raise TypeError(
            f"{type(pipe_or_unet).__name__} is neither a diffusers UNet2DConditionModel nor a "
            "pipeline with one as .unet (e.g. StableDiffusionInpaintPipeline); Analogist's "
            "processors need a UNet with down_blocks, mid_block and up_blocks."
        )
    return unet


class _AnalogistProcessor:
    """What SAC's and CAM's processors share: diffusers' processor protocol around the math.

    One instance per transformer block; ``calls`` counts the calls that applied the edit
    and ``previous`` is the processor it replaced (put back by ``remove``).
    """

    analogist_kind = ""
    _attn = "attn1"

    def __init__(
        self,
        layer: TransformerLayer,
        layout: GridLayout,
        latent_size: tuple[int, int],
        previous: Any,
    ):
        self.layer = layer
        self.geometry = layout.geometry  # every cell in whole px, all example pairs
        self.grid_size = (layout.grid_width, layout.grid_height)
        self.latent_size = (int(latent_size[0]), int(latent_size[1]))
        self.previous = previous
        self.calls = 0

    def __repr__(self) -> str:
        return f"Analogist {self.analogist_kind.upper()} processor on layer {self.layer.index}"

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError(
                f"{self!r}: the UNet was called with an attention mask; SAC and CAM are "
                "defined for unmasked attention (the Stable Diffusion pipelines pass none)."
            )
        if getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None:
            raise ValueError(f"{self!r}: attention with q/k normalisation is not supported.")
        residual = hidden_states
        if getattr(attn, "spatial_norm", None) is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        context = self._context(attn, hidden_states, encoder_hidden_states)
        key, value = attn.to_k(context), attn.to_v(context)
        regions = self._regions(query.shape[1], query.device)
        upcast = bool(getattr(attn, "upcast_attention", False))
        out = self._attend(query, key, value, attn.heads, regions, upcast).to(query.dtype)
        self.calls += 1

        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)

    def _context(
        self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        heads: int,
        regions: RegionTokens,
        upcast: bool,
    ) -> torch.Tensor:
        raise NotImplementedError

    def _regions(self, n_tokens: int, device: torch.device) -> RegionTokens:
        try:
            return regions_for_block(self.geometry, self.latent_size, n_tokens, device)
        except ValueError as exc:
            h, w = self.latent_size
            grid_w, grid_h = self.grid_size
            raise ValueError(
                f"{self!r} ({self.layer.name}): {exc} The processors were installed for a "
                f"{h} x {w} latent, the {grid_w} x {grid_h} px grid of the layout: call the "
                f"pipeline with height={grid_h}, width={grid_w} (the grid's size), or install "
                "with latent_size=(height, width) of the latent you sample."
            ) from exc


class AnalogistSACProcessor(_AnalogistProcessor):
    """Self-Attention Cloning on one block's self-attention (``attn1``)."""

    analogist_kind = "sac"
    _attn = "attn1"

    def __init__(
        self,
        layer: TransformerLayer,
        layout: GridLayout,
        latent_size: tuple[int, int],
        previous: Any = None,
        scale: float = PAPER_SAC_SCALE,
    ):
        super().__init__(layer, layout, latent_size, previous)
        self.scale = float(scale)

    def _context(self, attn, hidden_states, encoder_hidden_states):
        if encoder_hidden_states is not None:
            raise ValueError(
                f"{self!r} got encoder_hidden_states: it belongs on a self-attention (attn1)."
            )
        return hidden_states

    def _attend(self, q, k, v, heads, regions, upcast):
        return sac_attention(q, k, v, heads, regions, self.scale, upcast=upcast)


class AnalogistCAMProcessor(_AnalogistProcessor):
    """Cross-Attention Masking on one block's cross-attention (``attn2``)."""

    analogist_kind = "cam"
    _attn = "attn2"

    def _context(self, attn, hidden_states, encoder_hidden_states):
        if encoder_hidden_states is None:
            raise ValueError(
                f"{self!r} got no encoder_hidden_states: it belongs on a cross-attention (attn2)."
            )
        if getattr(attn, "norm_cross", None):
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        return encoder_hidden_states

    def _attend(self, q, k, v, heads, regions, upcast):
        return cam_attention(q, k, v, heads, regions, upcast=upcast)


@dataclass
class AnalogistInstallation:
    """What :func:`install_analogist` put where: processors by layer number."""

    unet: Any
    sac: dict[int, AnalogistSACProcessor]
    cam: dict[int, AnalogistCAMProcessor]

    def calls(self) -> dict[str, dict[int, int]]:
        """Edited calls per layer since installation, e.g. ``{"sac": {3: 50, ...}, ...}``."""
        return {
            "sac": {i: p.calls for i, p in self.sac.items()},
            "cam": {i: p.calls for i, p in self.cam.items()},
        }

    def remove(self) -> None:
        """Put back exactly the processors these replaced (where they are still ours)."""
        for processors in (self.sac, self.cam):
            for processor in processors.values():
                attention = getattr(processor.layer.block, processor._attn)
                if attention.processor is processor:
                    attention.set_processor(processor.previous)


LayerRange = Sequence[int]


def install_analogist(
    pipe_or_unet: Any,
    layout: GridLayout,
    *,
    sac_scale: float = PAPER_SAC_SCALE,
    sac_layers: LayerRange | None = PAPER_LAYERS,
    cam_layers: LayerRange | None = PAPER_LAYERS,
    latent_size: tuple[int, int] | None = None,
) -> AnalogistInstallation:
    """Put SAC and CAM processors on the chosen transformer blocks; keep all others.

    ``sac_layers`` / ``cam_layers`` are ``(start, end)`` in the paper's numbering, end
    exclusive (paper: ``(3, 11)``), or ``None`` for no SAC / no CAM. ``latent_size`` is
    the ``(height, width)`` of the latent the pipeline samples; by default the layout's
    grid divided by the pipeline's VAE factor (8 for SD). Our own processors on a chosen
    block are replaced (new settings); a plain diffusers processor is replaced; anything
    else (an IP-Adapter processor, another edit) is an error: nothing is installed then.
    """
    unet = find_unet(pipe_or_unet)
    layers = transformer_layers(unet)
    if latent_size is None:
        factor = int(getattr(pipe_or_unet, "vae_scale_factor", VAE_FACTOR))
        latent_size = (layout.grid_height // factor, layout.grid_width // factor)
    plan: list[tuple[type[_AnalogistProcessor], TransformerLayer, dict]] = []
    kinds: tuple[tuple[type[_AnalogistProcessor], Any, dict], ...] = (
        (AnalogistSACProcessor, sac_layers, {"scale": sac_scale}),
        (AnalogistCAMProcessor, cam_layers, {}),
    )
    for cls, chosen, options in kinds:
        if chosen is None:
            continue
        start, end = _layer_range(chosen, cls.analogist_kind)
        try:
            selected = select_blocks(layers, start, end)
        except ValueError as exc:
            raise ValueError(f"{cls.analogist_kind}_layers={tuple(chosen)}: {exc}") from exc
        for layer in selected:
            _check_replaceable(layer, cls)
            plan.append((cls, layer, options))

    installed: dict[str, dict[int, Any]] = {"sac": {}, "cam": {}}
    for cls, layer, options in plan:
        attention = getattr(layer.block, cls._attn)
        processor = cls(layer, layout, latent_size, previous=attention.processor, **options)
        attention.set_processor(processor)
        installed[cls.analogist_kind][layer.index] = processor
    return AnalogistInstallation(unet=unet, sac=installed["sac"], cam=installed["cam"])


def remove_analogist(pipe_or_unet: Any) -> int:
    """Take every Analogist processor off the UNet, restoring what was there before.

    Returns how many were removed.
    """
    removed = 0
    for layer in transformer_layers(pipe_or_unet):
        for name in ("attn1", "attn2"):
            attention = getattr(layer.block, name, None)
            if attention is None:
                continue
            processor = getattr(attention, "processor", None)
            if not getattr(processor, "analogist_kind", ""):
                continue
            while getattr(processor, "analogist_kind", ""):
                processor = getattr(processor, "previous", None)
            attention.set_processor(processor)
            removed += 1
    return removed


def _layer_range(chosen: LayerRange, kind: str) -> tuple[int, int]:
    values = tuple(chosen)
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(
            f"{kind}_layers={chosen!r}: give (start, end) as two whole numbers, end exclusive "
            f"(the paper: {PAPER_LAYERS}), or None to leave {kind.upper()} out."
        )
    return values[0], values[1]


def _check_replaceable(layer: TransformerLayer, cls: type[_AnalogistProcessor]) -> None:
    attention = getattr(layer.block, cls._attn, None)
    if attention is None:
        raise ValueError(
            f"layer {layer.index} ({layer.name}) has no {cls._attn}; it cannot take "
            f"{cls.analogist_kind.upper()}."
        )
    existing = attention.processor
    kind = getattr(existing, "analogist_kind", None)
    if kind == cls.analogist_kind:
        return
    owner = type(existing).__module__
    if type(existing).__name__ in _PLAIN_PROCESSORS and owner.startswith("diffusers"):
        return
    raise ValueError(
        f"layer {layer.index} ({layer.name}.{cls._attn}) already has the processor "
        f"{type(existing).__qualname__} from {owner}, which Analogist's "
        f"{cls.analogist_kind.upper()} would overwrite. SAC and CAM do not wrap other "
        "processors: take it off first (unet.set_attn_processor(AttnProcessor2_0()) restores "
        "diffusers' plain attention everywhere), or choose other layers."
    )
