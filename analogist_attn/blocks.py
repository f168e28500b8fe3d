"""Which transformer blocks a UNet has, in the paper's order and by ComfyUI's patch keys.

The paper numbers SD1.5's 16 transformer blocks in execution order (0-5 = input blocks
1, 2, 4, 5, 7, 8; 6 = middle; 7-15 = output blocks 3..11) and picks a range of them.
ComfyUI addresses an attention replace patch by ``(block_name, number, transformer_index)``:
``("input", i)`` / ``("middle", 0)`` / ``("output", i)`` is the UNet block being run and
the index counts the transformers inside its SpatialTransformer. Walking the model,
rather than hard-coding SD1.5's numbers, gives the right keys for SD2.x and SDXL too
(SDXL: 70 blocks, 2 or 10 per UNet block). Duck typing keeps this free of a ``comfy``
import.

The paper's choice, by resolution level: on SD1.5 layers 3..10 are every block of the
coarsest level that has attention in the encoder (input 7, 8: 1/4 of the latent), the
middle block, the decoder's blocks of that level (output 3..5), and the one UNet block on
each side of them one level finer (input 5 and output 6, at 1/2). Skipped: the finest
level (1/1: input 1, 2 and output 9..11) and the rest of 1/2 (input 4, output 7, 8).
:func:`paper_layer_range` applies that rule to any UNet: on SDXL (no transformer at 1/1)
it gives layers 2..65 (input 5, input 7, 8, middle, output 0..2, output 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from . import defaults

BlockKey = tuple[str, int, int]

# The paper's default SAC/CAM layers on SD1.5 (end exclusive).
PAPER_START_LAYER = defaults.START_LAYER
PAPER_END_LAYER = defaults.END_LAYER


def transformer_block_keys(model: Any) -> list[BlockKey]:
    """Patch keys of every transformer block of a UNet, in execution order.

    ``model`` is a UNet with ``input_blocks``, ``middle_block`` and ``output_blocks``
    (ComfyUI's ``UNetModel``), or something that holds one as ``model.diffusion_model``
    (a ``BaseModel``) or ``model.model.diffusion_model`` (a ``ModelPatcher``).
    """
    return list(transformer_block_modules(model))


def transformer_block_modules(model: Any) -> dict[BlockKey, Any]:
    """The transformer block module (``BasicTransformerBlock``) behind every patch key.

    Same walk and order as :func:`transformer_block_keys`; a patch uses it to reach a
    block's own layers (e.g. CAM's ``attn2.to_out``).
    """
    unet = _find_unet(model)
    modules: dict[BlockKey, Any] = {}
    stages = (
        ("input", list(unet.input_blocks)),
        ("middle", [unet.middle_block]),
        ("output", list(unet.output_blocks)),
    )
    for name, blocks in stages:
        for number, block in enumerate(blocks):
            if block is None:
                continue
            children: Iterable[Any] = block.children() if hasattr(block, "children") else block
            index = 0
            for child in children:
                for transformer in getattr(child, "transformer_blocks", ()):
                    modules[(name, number, index)] = transformer
                    index += 1
    return modules


def transformer_block_levels(model: Any) -> dict[BlockKey, int]:
    """The resolution level of every transformer block: its token map is latent / 2**level.

    Counted from the model, not from its name: a UNet block's transformers run at the
    level reached by the ``Downsample`` modules of the input blocks before it; the output
    blocks start at the middle block's level and each ``Upsample`` (the last module of its
    output block) moves the blocks after it one level finer.
    """
    unet = _find_unet(model)
    modules = transformer_block_modules(unet)
    down = sum(_count_modules(block, "Downsample") for block in unet.input_blocks)
    level_of: dict[tuple[str, int], int] = {("middle", 0): down}
    level = 0
    for number, block in enumerate(unet.input_blocks):
        level_of[("input", number)] = level
        level += _count_modules(block, "Downsample")
    level = down
    for number, block in enumerate(unet.output_blocks):
        level_of[("output", number)] = level
        level -= _count_modules(block, "Upsample")
    return {key: level_of[key[:2]] for key in modules}


def paper_layer_range(model: Any) -> tuple[int, int]:
    """``(start, end)`` (end exclusive): the paper's SD1.5 choice carried to this UNet.

    The rule (see the module docstring) gives the paper's 3, 11 on SD1.x/SD2.x and
    2, 66 on SDXL: the coarsest encoder level with attention, the middle block and the
    decoder at that level, plus the last encoder block and the first decoder block with
    attention one level finer.
    """
    levels = transformer_block_levels(model)
    keys = list(levels)
    deepest = max((lvl for key, lvl in levels.items() if key[0] == "input"), default=None)
    if deepest is None:
        return 0, len(keys)
    chosen = [i for i, key in enumerate(keys) if key[0] == "middle" or levels[key] >= deepest]
    finer_in = [key[:2] for key in keys if key[0] == "input" and levels[key] == deepest - 1]
    finer_out = [key[:2] for key in keys if key[0] == "output" and levels[key] == deepest - 1]
    side = {finer_in[-1]} if finer_in else set()
    side |= {finer_out[0]} if finer_out else set()
    chosen += [i for i, key in enumerate(keys) if key[:2] in side]
    return min(chosen), max(chosen) + 1


def describe_blocks(model: Any, keys: Sequence[BlockKey]) -> str:
    """Which UNet blocks and levels ``keys`` are, e.g. ``input 7 (10 blocks, 1/4)``."""
    levels = transformer_block_levels(model)
    order = list(levels)
    groups: dict[tuple[str, int], list[int]] = {}
    for key in keys:
        groups.setdefault(key[:2], []).append(order.index(key))
    parts = []
    for (name, number), layers in groups.items():
        label = "middle" if name == "middle" else f"{name} {number}"
        span = f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
        parts.append(f"{label} ({span}, latent/{2 ** levels[(name, number, 0)]})")
    return ", ".join(parts)


def _count_modules(block: Any, class_name: str) -> int:
    children = block.modules() if hasattr(block, "modules") else block
    return sum(1 for child in children if type(child).__name__ == class_name)


K = TypeVar("K")  # a block key: ComfyUI's patch key, or a diffusers layer


def select_blocks(keys: Sequence[K], start_layer: int, end_layer: int) -> list[K]:
    """The keys of layers ``start_layer <= i < end_layer`` (the paper's numbering)."""
    count = len(keys)
    if not 0 <= start_layer < end_layer <= count:
        raise ValueError(
            f"layer range start={start_layer}, end={end_layer} (end exclusive) is empty or "
            f"outside this model's {count} transformer blocks: valid layers are 0..{count - 1}, "
            f"so use 0 <= start < end <= {count}. The paper's default on SD1.5 (16 blocks) "
            f"is start={PAPER_START_LAYER}, end={PAPER_END_LAYER}."
        )
    return list(keys[start_layer:end_layer])


def _find_unet(model: Any) -> Any:
    for path in ((), ("diffusion_model",), ("model", "diffusion_model")):
        candidate = model
        for attr in path:
            candidate = getattr(candidate, attr, None)
        if all(hasattr(candidate, a) for a in ("input_blocks", "middle_block", "output_blocks")):
            return candidate
    inner = getattr(model, "diffusion_model", None)
    inner = (
        inner
        if inner is not None
        else getattr(getattr(model, "model", None), "diffusion_model", None)
    )
    what = type(model).__name__ + (
        f" (diffusion model {type(inner).__name__})" if inner is not None else ""
    )
    raise TypeError(
        f"{what} has no UNet with input_blocks, middle_block and output_blocks, so "
        "Analogist cannot patch it. Supported: UNet models with SpatialTransformer blocks "
        "(SD1.x, SD2.x, SDXL; inpainting checkpoints for Analogist). Not supported: DiT "
        "and other models (SD3, Flux, video models)."
    )
