"""SAC and CAM check, as sampling starts, that their layout is the grid being sampled.

A ComfyUI model-patcher wrapper around each batch of UNet calls (``CALC_COND_BATCH``)
reads the inpainting mask the model gets (the ``mask`` channel of its ``c_concat`` input,
made by InpaintModelConditioning from Grid Compose's mask) and compares it with each
patch node's layout (:func:`analogist_pixels.latent_mask.mask_mismatch`): a layout from
another Grid Compose stops the run with a message naming both nodes, instead of editing
the wrong cells. Checked once per mask tensor (not per step).

The mask cannot tell a one-pair layout of one arrangement from the other's (B' is in the
same corner), so a second wrapper, around the whole sampling (``OUTER_SAMPLE``), looks at
the latent the sampler starts from: Grid Compose's grid has B copied over B', so there the
B' cell must match the layout's B cell and no other
(:func:`analogist_pixels.start_latent.start_latent_mismatch`; no VAE or model kind
assumed, so Flux's patch installs the same check). Where the host has no wrappers (0.0.1),
nothing is checked: only the grid's proportions are (nodes/patching.py).
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

import torch

from ..analogist_pixels.latent_mask import mask_mismatch
from ..analogist_pixels.layout import GridLayout
from ..analogist_pixels.start_latent import start_latent_mismatch

log = logging.getLogger("analogist")

LAYOUT_CHECK_KEY = "analogist_layout_check"
START_CHECK_KEY = "analogist_layout_start_check"


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
                raise _refusal(node, problem)
        self._checked = weakref.ref(base)


def _refusal(node: str, problem: str) -> ValueError:
    return ValueError(
        f"{node}: its layout does not belong to the grid being sampled: {problem}. "
        "The layout must come from the same Analogist Grid Compose whose grid and "
        "mask reach the sampler (through InpaintModelConditioning); connect that "
        f"Grid Compose's layout output to {node}."
    )


class StartLatentCheck:
    """Around the sampling: the start latent's cells against each layout (see the module
    docstring). ``layouts``: node name -> the layout it was given."""

    def __init__(self, layouts: dict[str, GridLayout]):
        self.layouts = dict(layouts)

    def __call__(self, executor, *args, **kwargs):
        latent = args[1] if len(args) > 1 else kwargs.get("latent_image")
        if (
            isinstance(latent, torch.Tensor)
            and not getattr(latent, "is_nested", False)
            and latent.ndim == 4
        ):
            self.check(latent)
        return executor(*args, **kwargs)

    def check(self, latent: torch.Tensor) -> None:
        for node, layout in self.layouts.items():
            if not _same_proportions(layout, latent):
                continue  # the patch itself reports a latent of other proportions
            problem = start_latent_mismatch(layout, latent)
            if problem is not None:
                raise _refusal(node, problem)


def _same_proportions(layout: GridLayout, mask: torch.Tensor) -> bool:
    from ..analogist_attn.geometry import latent_fits_grid

    height, width = mask.shape[-2:]
    return latent_fits_grid(width, height, layout.grid_width, layout.grid_height)


def install_layout_check(patched: Any, node: str, layout: GridLayout, mask: bool = True) -> None:
    """Register (or widen) the checks on the patcher, where the host has wrappers.

    ``mask=False`` (Flux): only the start latent is checked; Flux Fill's concat input is
    the masked image's 16 latent channels and then a packed mask, not SD's mask first."""
    try:
        from comfy.patcher_extension import WrappersMP
    except ImportError:
        return  # ComfyUI 0.0.1: no wrappers
    if not hasattr(patched, "add_wrapper_with_key"):
        return
    checks = (
        (WrappersMP.CALC_COND_BATCH if mask else None, LAYOUT_CHECK_KEY, LayoutCheck),
        (getattr(WrappersMP, "OUTER_SAMPLE", None), START_CHECK_KEY, StartLatentCheck),
    )
    for kind, key, check in checks:
        if kind is None:
            continue
        layouts: dict[str, GridLayout] = {}
        for old in patched.get_wrappers(kind, key):
            layouts.update(getattr(old, "layouts", {}))
        layouts[node] = layout
        patched.remove_wrappers_with_key(kind, key)
        patched.add_wrapper_with_key(kind, key, check(layouts))
