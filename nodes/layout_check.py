"""SAC and CAM check, as sampling starts, that their layout is the grid being sampled.

A ComfyUI model-patcher wrapper around each batch of UNet calls (``CALC_COND_BATCH``)
reads the inpainting mask the model gets (the ``mask`` channel of its ``c_concat`` input,
made by InpaintModelConditioning from Grid Compose's mask) and compares it with each
patch node's layout (:func:`analogist_pixels.latent_mask.mask_mismatch`): a layout from
another Grid Compose stops the run with a message naming both nodes, instead of editing
the wrong cells. Checked once per mask tensor (not per step). Where the host has no
wrappers (0.0.1) or the model gets no concat mask (a non-inpainting model), nothing is
checked: only the grid's proportions are (nodes/patching.py).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import torch

from ..analogist_pixels.latent_mask import mask_mismatch
from ..analogist_pixels.layout import GridLayout

log = logging.getLogger("analogist")

LAYOUT_CHECK_KEY = "analogist_layout_check"


def concat_mask(conds: Any) -> torch.Tensor | None:
    """The inpainting mask of the first cond that has one: [batch, height, width]."""
    for group in conds or []:
        for cond in group or []:
            concat = ((cond or {}).get("model_conds") or {}).get("c_concat")
            data = getattr(concat, "cond", None)
            if isinstance(data, torch.Tensor) and data.ndim == 4 and data.shape[1] >= 5:
                return data[:, 0]  # SD inpainting: mask, then the masked image's latent
    return None


class LayoutCheck:
    """``layouts``: node name -> the layout it was given."""

    def __init__(self, layouts: dict[str, GridLayout]):
        self.layouts = dict(layouts)
        self._checked: weakref.ref | None = None  # the last mask found right (no copy kept)

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        mask = concat_mask(conds)
        if mask is not None and mask.shape[-2:] == x_in.shape[-2:]:
            self.check(mask)
        return executor(model, conds, x_in, timestep, model_options)

    def check(self, mask: torch.Tensor) -> None:
        base = mask._base if mask._base is not None else mask
        if self._checked is not None and self._checked() is base:
            return
        for node, layout in self.layouts.items():
            if not _same_proportions(layout, mask):
                continue  # the patch itself reports a latent of other proportions
            problem = mask_mismatch(layout, mask)
            if problem is not None:
                raise ValueError(
                    f"{node}: its layout does not belong to the grid being sampled: {problem}. "
                    "The layout must come from the same Analogist Grid Compose whose grid and "
                    "mask reach the sampler (through InpaintModelConditioning); connect that "
                    f"Grid Compose's layout output to {node}."
                )
        self._checked = weakref.ref(base)


def _same_proportions(layout: GridLayout, mask: torch.Tensor) -> bool:
    from ..analogist_attn.geometry import latent_fits_grid

    height, width = mask.shape[-2:]
    return latent_fits_grid(width, height, layout.grid_width, layout.grid_height)


def install_layout_check(patched: Any, node: str, layout: GridLayout) -> None:
    """Register (or widen) the check on the patcher, where the host has wrappers."""
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        return  # ComfyUI 0.0.1: no wrappers
    if not hasattr(patched, "add_wrapper_with_key"):
        return
    kind = WrappersMP.CALC_COND_BATCH
    layouts: dict[str, GridLayout] = {}
    for old in patched.get_wrappers(kind, LAYOUT_CHECK_KEY):
        layouts.update(getattr(old, "layouts", {}))
    layouts[node] = layout
    patched.remove_wrappers_with_key(kind, LAYOUT_CHECK_KEY)
    patched.add_wrapper_with_key(kind, LAYOUT_CHECK_KEY, LayoutCheck(layouts))
