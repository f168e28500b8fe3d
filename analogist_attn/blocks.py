"""Which transformer blocks a UNet has, in the paper's order and by ComfyUI's patch keys.

The paper numbers SD1.5's 16 transformer blocks in execution order (0-5 = input blocks
1, 2, 4, 5, 7, 8; 6 = middle; 7-15 = output blocks 3..11) and picks a range of them.
ComfyUI addresses an attention replace patch by ``(block_name, number, transformer_index)``:
``("input", i)`` / ``("middle", 0)`` / ``("output", i)`` is the UNet block being run and
the index counts the transformers inside its SpatialTransformer. Walking the model,
rather than hard-coding SD1.5's numbers, gives the right keys for SD2.x and SDXL too.
Duck typing keeps this free of a ``comfy`` import.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

BlockKey = tuple[str, int, int]

# The paper's default SAC/CAM layers on SD1.5 (end exclusive).
PAPER_START_LAYER = 3
PAPER_END_LAYER = 11


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


def select_blocks(keys: Sequence[BlockKey], start_layer: int, end_layer: int) -> list[BlockKey]:
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
    raise TypeError(
        f"{type(model).__name__} has no UNet with input_blocks, middle_block and "
        "output_blocks; Analogist's attention edits need an SD1.x, SD2.x or SDXL UNet."
    )
