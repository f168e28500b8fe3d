"""ComfyUI glue for the grid nodes: compose the analogy grid, label it, crop B' back out.

The image math lives in ``analogist_pixels.grid`` and ``analogist_pixels.marks``; these
classes only declare inputs and outputs and pass values through.
"""

from __future__ import annotations

import torch

from ..analogist_pixels import grid as grid_math
from ..analogist_pixels import marks
from ..analogist_pixels import region as region_math
from ..analogist_pixels.layout import (
    ARRANGEMENTS,
    FITS,
    LAYOUT_TYPE,
    MAX_PAIRS,
    GridLayout,
    check_layout,
)

CATEGORY = "Analogist"
# ComfyUI socket type of a chain of example pairs: a tuple of (A_k, A'_k) IMAGE pairs.
EXAMPLES_TYPE = "ANALOGIST_EXAMPLES"

_CELL_TOOLTIP = (
    "Width of one cell of the 2x2 grid, in px (a multiple of 64 so each cell edge falls on "
    "a token edge at every UNet level). The grid is two cells wide and two high (each extra "
    "example pair adds a row of cells; a column for 'A aligned with B'). Paper: 256 "
    "(grid 512) or 512 (grid 1024)."
)
_LAYOUT_TOOLTIP = (
    "The grid layout from the Analogist Grid Compose that made this grid (checked against "
    "the grid's A, A', B cells; a layout from another Grid Compose is an error)."
)


def _cell_input(tooltip: str) -> tuple[str, dict]:
    return (
        "INT",
        {
            "default": 256,
            "min": grid_math.MIN_CELL,
            "max": grid_math.MAX_CELL,
            "step": grid_math.CELL_STEP,
            "tooltip": tooltip,
        },
    )


class AnalogistGridCompose:
    """A, A', B -> the paper's 2x2 grid, its blank twin, the B' mask and the layout."""

    DESCRIPTION = (
        "Builds the Analogist visual prompt A : A' :: B : ?. A, A' and B are fitted into "
        "three cells of a 2x2 grid on a white canvas (2 px border as in the paper); the "
        "fourth cell, B', is what the inpainting model fills. With fit = stretch, cells 256 "
        "and border 2 the grid is pixel-identical to the paper's. A batch of N images in b "
        "with one example pair gives N grids. More example pairs (Analogist Example Pair "
        "nodes into 'examples') add one grid row each, B | B' last. An optional b_region "
        "MASK limits the change to part of B: the mask output is then that region in B'."
    )
    CATEGORY = CATEGORY
    FUNCTION = "compose"
    RETURN_TYPES = ("IMAGE", "IMAGE", "MASK", LAYOUT_TYPE)
    RETURN_NAMES = ("grid", "grid_blank", "mask", "layout")
    OUTPUT_TOOLTIPS = (
        "The grid the sampler starts from: B is also copied into the B' cell. Encode it "
        "with the mask (VAE Encode for Inpainting / InpaintModelConditioning) and sample "
        "with denoise about 0.98.",
        "The grid with the B' cell black: what a vision-language model should see (feed "
        "it to Analogist Mark and Arrow first).",
        "1 on the whole B' cell, 0 elsewhere: the inpainting mask. With b_region: 1 only "
        "on that region mapped into B' (grown to whole 8x8 px latent pixels); the rest of "
        "B' keeps B's pixels.",
        "Where each cell is and how each B was fitted. Connect it to the attention nodes, "
        "Mark and Arrow and Grid Crop.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "a": (
                    "IMAGE",
                    {"tooltip": "A: the example before the change. 1 image, or one per grid."},
                ),
                "a_prime": (
                    "IMAGE",
                    {"tooltip": "A': the example after the change. 1 image, or one per grid."},
                ),
                "b": (
                    "IMAGE",
                    {"tooltip": "B: the image(s) to change the same way. N images give N grids."},
                ),
                "cell_width": _cell_input(_CELL_TOOLTIP),
                "cell_height": _cell_input(_CELL_TOOLTIP.replace("Width", "Height")),
                "border": (
                    "INT",
                    {
                        "default": 2,
                        "min": 1,
                        "max": grid_math.MAX_CELL // 4,
                        "step": 1,
                        "tooltip": "White margin around each image, in px (paper: 2). Each "
                        "image is cell - 1.5 x border px wide (253 for 256 / 2).",
                    },
                ),
                "fit": (
                    list(FITS),
                    {
                        "default": FITS[0],
                        "tooltip": "How an image of another shape fills its cell. stretch: "
                        "resize to the cell (the paper; distorts other aspect ratios). "
                        "letterbox: keep the aspect ratio, white bands around. crop: keep the "
                        "aspect ratio, cut the centre out. Grid Crop undoes it for B'.",
                    },
                ),
                "arrangement": (
                    list(ARRANGEMENTS),
                    {
                        "default": ARRANGEMENTS[0],
                        "tooltip": "Where A' and B go. The paper puts A' right of A and B "
                        "below A. 'A aligned with B' swaps A' and B, for examples where A "
                        "matches B in layout rather than A' (the paper's corgi example).",
                    },
                ),
            },
            "optional": {
                "examples": (
                    EXAMPLES_TYPE,
                    {
                        "tooltip": "More example pairs (from Analogist Example Pair nodes), "
                        "after a, a_prime: one grid row per pair, B | B' last ('A aligned "
                        f"with B': one column per pair). At most {MAX_PAIRS} pairs in all. "
                        "Leave empty for the paper's single pair.",
                    },
                ),
                "b_region": (
                    "MASK",
                    {
                        "tooltip": "Optional region of interest on B: only this part of B "
                        "may change (any shape; draw it in the mask editor of B's Load Image "
                        "and connect its MASK). At B's size; 1 mask for all B or one per grid; "
                        "a pixel counts when its value is >= 0.5. The mask output becomes this "
                        "region in B' (whole 8x8 px latent pixels) and Grid Crop puts B's own "
                        "pixels back outside it. Empty or outside B: an error."
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, cell_width=None, cell_height=None, border=None) -> bool | str:
        return check_grid_settings(cell_width, cell_height, border)

    def compose(
        self,
        a: torch.Tensor,
        a_prime: torch.Tensor,
        b: torch.Tensor,
        cell_width: int = 256,
        cell_height: int = 256,
        border: int = 2,
        fit: str = FITS[0],
        arrangement: str = ARRANGEMENTS[0],
        examples: tuple | None = None,
        b_region: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, GridLayout]:
        out = grid_math.compose_grids(
            a,
            a_prime,
            b,
            cell_width,
            cell_height,
            border,
            fit,
            arrangement,
            examples=tuple(examples or ()),
        )
        if b_region is not None:
            out = region_math.with_region(out, b, b_region)
        return (out.grid, out.grid_blank, out.mask, out.layout)


class AnalogistExamplePair:
    """One more example pair (A_k, A'_k), chained like conditioning into Grid Compose."""

    DESCRIPTION = (
        "Adds an example pair A -> A' for Grid Compose's optional 'examples' input. Chain "
        "them (examples in, examples out) for several pairs; Grid Compose's own a, a_prime "
        "are pair 1 and the chain's pairs follow in order. Each pair is a grid row; SAC "
        "lets B' copy its relation from all of them. Two or three clear pairs make an "
        f"ambiguous change clear; at most {MAX_PAIRS} pairs in all (grid size, memory)."
    )
    CATEGORY = CATEGORY
    FUNCTION = "add"
    RETURN_TYPES = (EXAMPLES_TYPE,)
    RETURN_NAMES = ("examples",)
    OUTPUT_TOOLTIPS = (
        "The example pairs so far: connect to Grid Compose's examples input, or to "
        "another Example Pair.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "a": (
                    "IMAGE",
                    {"tooltip": "This pair's A, before the change. 1 image, or one per grid."},
                ),
                "a_prime": (
                    "IMAGE",
                    {"tooltip": "This pair's A', after the change. 1 image, or one per grid."},
                ),
            },
            "optional": {
                "examples": (
                    EXAMPLES_TYPE,
                    {"tooltip": "Pairs from an earlier Example Pair; this pair comes after them."},
                ),
            },
        }

    def add(
        self, a: torch.Tensor, a_prime: torch.Tensor, examples: tuple | None = None
    ) -> tuple[tuple]:
        earlier = tuple(examples or ())
        pair = len(earlier) + 2  # Grid Compose's own a, a_prime are pair 1
        grid_math.check_image(a, f"Example Pair (pair {pair}) a")
        grid_math.check_image(a_prime, f"Example Pair (pair {pair}) a_prime")
        chained = earlier + ((a, a_prime),)
        # Counted with Grid Compose's own pair: the limit's error names the reason.
        grid_math.check_examples(chained, grid_math.MIN_CELL, grid_math.MIN_CELL, ARRANGEMENTS[0])
        return (chained,)


class AnalogistMarkAndArrow:
    """The grid with labelled cells and A -> A', B -> B' arrows, for the VLM."""

    DESCRIPTION = (
        "Draws what the paper shows GPT-4V: a black square with a white 'A', 'A'', 'B', "
        "'B'' at each cell's corner and two red arrows from A to A' and from B to B'. Sizes "
        "follow the cell (36 px labels and 4 px arrows at cell 256). The font ships with "
        "Pillow, so the result is the same on every machine."
    )
    CATEGORY = CATEGORY
    FUNCTION = "mark"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("marked_grid",)
    OUTPUT_TOOLTIPS = ("The grid with labels and arrows: send it to the vision-language model.",)

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        def color(default: str, what: str) -> tuple[str, dict]:
            return (
                "STRING",
                {"default": default, "tooltip": f"{what}, as #RRGGBB or R, G, B (0-255)."},
            )

        return {
            "required": {
                "grid": (
                    "IMAGE",
                    {
                        "tooltip": "The grid to label, usually grid_blank from Grid Compose (B' black)."
                    },
                ),
                "layout": (LAYOUT_TYPE, {"tooltip": _LAYOUT_TOOLTIP}),
                "label_size": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": grid_math.MAX_CELL // 2,
                        "step": 1,
                        "tooltip": "Side of the label squares in px. 0 = the paper's: 36 px "
                        "at cell 256, scaled with the cell.",
                    },
                ),
                "label_color": color("#000000", "Colour of the label squares (paper: black)"),
                "text_color": color("#FFFFFF", "Colour of the label text (paper: white)"),
                "arrow_color": color("#E60000", "Colour of the arrows (paper: 230, 0, 0)"),
                "arrow_width": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": grid_math.MAX_CELL // 8,
                        "step": 1,
                        "tooltip": "Line width of the arrows in px. 0 = the paper's: cell / 64 "
                        "(4 px at cell 256).",
                    },
                ),
                "draw_labels": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Draw the A, A', B, B' labels."},
                ),
                "draw_arrows": (
                    "BOOLEAN",
                    {"default": True, "tooltip": "Draw the A -> A' and B -> B' arrows."},
                ),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, label_color=None, text_color=None, arrow_color=None) -> bool | str:
        for name, value in (
            ("label_color", label_color),
            ("text_color", text_color),
            ("arrow_color", arrow_color),
        ):
            if value is None:  # fed by a link: judged when it runs
                continue
            try:
                marks.parse_color(value, name)
            except (TypeError, ValueError) as exc:
                return f"Colour not understood: {exc}"
        return True

    def mark(
        self,
        grid: torch.Tensor,
        layout: GridLayout,
        label_size: int = 0,
        label_color: str = "#000000",
        text_color: str = "#FFFFFF",
        arrow_color: str = "#E60000",
        arrow_width: int = 0,
        draw_labels: bool = True,
        draw_arrows: bool = True,
    ) -> tuple[torch.Tensor]:
        marked = marks.mark_grids(
            grid,
            _check_layout(layout),
            label_side=label_size,
            label_background=marks.parse_color(label_color, "label_color"),
            label_text=marks.parse_color(text_color, "text_color"),
            arrow_color=marks.parse_color(arrow_color, "arrow_color"),
            arrow_width=arrow_width,
            labels=draw_labels,
            arrows=draw_arrows,
        )
        return (marked,)


class AnalogistGridCrop:
    """B' out of the sampled grid, back at B's size; plus an A | A' | B | B' strip."""

    DESCRIPTION = (
        "Cuts B' out of the decoded grid. By default it is restored to B's original size "
        "and aspect ratio, undoing the letterbox or crop of Grid Compose. Several samples "
        "per grid are fine: image i belongs to grid i mod N. Also gives a side-by-side strip "
        "A | A' | B | B' for a quick look. The layout remembers a thumbnail of its grid's "
        "A, A', B cells: a layout from another Grid Compose is refused with an error; if the "
        "sampler regenerated those cells too, a warning says the layout cannot be confirmed. "
        "With a region on B (Grid Compose's b_region), B' is composited over the original B "
        "(carried in the layout) outside the region, so those pixels come back unchanged."
    )
    CATEGORY = CATEGORY
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("b_prime", "strip")
    OUTPUT_TOOLTIPS = (
        "The generated B', one per input image.",
        "The four cells side by side, A | A' | B | B', one row per input image.",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "grid": (
                    "IMAGE",
                    {
                        "tooltip": "The decoded grid(s) from VAE Decode, same size as the layout's grid."
                    },
                ),
                "layout": (LAYOUT_TYPE, {"tooltip": _LAYOUT_TOOLTIP}),
                "output_size": (
                    list(grid_math.OUTPUT_SIZES),
                    {
                        "default": grid_math.SIZE_ORIGINAL,
                        "tooltip": "original size of B: undo the fit (stretch and letterbox "
                        "give B's full size; crop gives the part of B that was kept, at its "
                        "own resolution, or all of B when Grid Compose had a b_region). "
                        "as placed in the grid: the B' pixels as generated, "
                        "no resize. whole cell: the whole B' cell, border included. B images "
                        "of different sizes in one batch are all resized to the first one's size.",
                    },
                ),
            },
            "optional": {
                "feather": (
                    "INT",
                    {
                        "default": region_math.DEFAULT_FEATHER,
                        "min": 0,
                        "max": region_math.MAX_FEATHER,
                        "step": 1,
                        "tooltip": "Only with a region on B (Grid Compose's b_region): B' is "
                        "kept inside the region and B's own pixels come back unchanged "
                        "outside it, blended over this many px of the output image just "
                        "outside the region (0 = hard edge). Without a region: not used.",
                    },
                ),
            },
        }

    def crop(
        self,
        grid: torch.Tensor,
        layout: GridLayout,
        output_size: str = grid_math.SIZE_ORIGINAL,
        feather: int = region_math.DEFAULT_FEATHER,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layout = _check_layout(layout)
        b_prime = grid_math.crop_b_prime(grid, layout, output_size)
        if region_math.has_region(layout):
            b_prime = region_math.composite_over_b(b_prime, layout, output_size, feather)
        return (b_prime, grid_math.strip(grid, layout))


def check_grid_settings(cell_width: object, cell_height: object, border: object) -> bool | str:
    """What Grid Compose can check before the queue: True, or the artist's message.

    ComfyUI passes ``None`` for an input fed by a link (not known yet), and skips its own
    min/max check for the inputs named here, so the ranges are checked here.
    """
    cells = {}
    for name, value in (("cell_width", cell_width), ("cell_height", cell_height)):
        if value is None:
            continue
        try:
            grid_math.check_cell_size(value, name)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            return f"Cell size not usable: {exc}"
        cells[name] = value
    if border is None:
        return True
    width = cells.get("cell_width", grid_math.MAX_CELL)
    height = cells.get("cell_height", grid_math.MAX_CELL)
    try:
        grid_math.check_border(border, width, height)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        return f"Border too wide or too thin: {exc}"
    return True


def _check_layout(layout: object) -> GridLayout:
    """ComfyUI checks socket types by name only; make sure a layout really is one."""
    return check_layout(layout, "layout")


NODE_CLASS_MAPPINGS: dict[str, type] = {
    "AnalogistGridCompose": AnalogistGridCompose,
    "AnalogistExamplePair": AnalogistExamplePair,
    "AnalogistMarkAndArrow": AnalogistMarkAndArrow,
    "AnalogistGridCrop": AnalogistGridCrop,
}

NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {
    "AnalogistGridCompose": "Analogist Grid Compose",
    "AnalogistExamplePair": "Analogist Example Pair",
    "AnalogistMarkAndArrow": "Analogist Mark and Arrow",
    "AnalogistGridCrop": "Analogist Grid Crop",
}
