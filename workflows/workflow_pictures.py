"""The pictures the workflows ship with: the example images, ReVersion's exemplars, thumbnails.

Used by ``build_workflows.py``: its recipes load the images by the names here, its
``render_all`` writes what the functions here draw. Everything is deterministic: the example
images and the exemplars are drawn with Pillow from fixed shapes; a thumbnail is the
paper's labelled grid built from the example images by the pack's own grid code
(``thumbnail``), or ReVersion's exemplars as a montage (``montage_thumbnail``), over a
caption band with each template's badge and colour (``CAPTIONS``, ``THUMBNAILS``).
MimicBrush's images and thumbnails are drawn in ``mimicbrush_recipes.py``.
"""

from __future__ import annotations

import io
from typing import Any

# The example images every workflow loads (drawn by example_images, shipped in
# workflows/images/, copied into ComfyUI/input/ by the pack).
IMAGE_A = "analogist_example_a.png"
IMAGE_A_PRIME = "analogist_example_a_prime.png"
IMAGE_B = "analogist_example_b.png"
# B with a painted mask, as ComfyUI's mask editor saves it: the region is transparent
# (alpha 0, so Load Image's MASK is 1 there), B's colours are kept under it.
IMAGE_B_REGION = "analogist_example_b_region.png"
# The second example pair (analogist_two_examples).
IMAGE_A2 = "analogist_example_a2.png"
IMAGE_A2_PRIME = "analogist_example_a2_prime.png"
# ReVersion's example exemplars (reversion_exemplars): things inside containers.
RELATION = "inside"  # the example relation: the name <R> is saved under (embedding:inside)
EXEMPLAR_FOLDER = "reversion_inside"  # shipped in workflows/images/, copied into ComfyUI/input/

# -- each template's thumbnail: its caption, badge and colour -------------------------------
CAPTIONS = {
    "analogist_manual_prompt": "Start here: Analogist, typed prompt",
    "analogist": "Analogist: GPT-4V prompt",
    "analogist_aligned_with_b": "Analogist: A aligned with B",
    "analogist_lora_controlnet": "Analogist + LoRA + ControlNet",
    "analogist_best_of_n": "Analogist: best of 4 by CLIP",
    "analogist_sdxl": "Analogist on SDXL inpainting",
    "analogist_region": "Analogist: region of interest on B",
    "analogist_two_examples": "Analogist: two example pairs",
    "analogist_flux_fill": "Analogist on Flux.1 Fill (experimental)",
    "reversion_learn": "ReVersion: learn a relation",
    "reversion_generate": f"ReVersion: use embedding:{RELATION}",
    "analogist_exact_ddim": "Analogist: exact diffusers DDIM",
}
# What sets each thumbnail apart: a badge (top right), a colour, what B' shows.
THUMBNAILS: dict[str, dict[str, Any]] = {
    "analogist_manual_prompt": {"badge": "START HERE", "colour": (46, 125, 50), "b_prime": "?"},
    "analogist": {"badge": "VLM PROMPT", "colour": (21, 101, 192), "b_prime": "vlm"},
    "analogist_aligned_with_b": {"badge": "A ALIGNED", "colour": (0, 121, 107), "b_prime": "?"},
    "analogist_lora_controlnet": {
        "badge": "LORA + CN",
        "colour": (123, 31, 162),
        "b_prime": "edges",
    },
    "analogist_best_of_n": {"badge": "BEST OF 4", "colour": (239, 108, 0), "b_prime": "best"},
    "analogist_sdxl": {"badge": "SDXL", "colour": (198, 40, 40), "b_prime": "?"},
    "analogist_region": {"badge": "REGION", "colour": (191, 110, 0), "b_prime": "region"},
    "analogist_two_examples": {"badge": "2 PAIRS", "colour": (0, 131, 143), "b_prime": "?"},
    "analogist_flux_fill": {"badge": "FLUX.1", "colour": (69, 90, 100), "b_prime": "?"},
    "analogist_exact_ddim": {"badge": "EXACT DDIM", "colour": (93, 64, 55), "b_prime": "?"},
    "reversion_learn": {"badge": "LEARN <R>", "colour": (106, 27, 154)},
    "reversion_generate": {"badge": "USE <R>", "colour": (40, 53, 147)},
}


# -- ReVersion's example exemplars (the relation "inside") -------------------------------------
def reversion_exemplars(size: int = 128) -> dict[str, tuple[Any, list[str]]]:
    """Four drawings of a thing inside a container: file name -> (image, caption templates)."""
    from PIL import Image, ImageDraw

    s = size
    paper = (250, 247, 240)
    out = {}
    specs = (
        (
            "disc_box.png",
            "ellipse",
            (240, 140, 40),
            (40, 90, 200),
            ["orange disc {} blue box", "disc {} box"],
        ),
        (
            "triangle_basket.png",
            "polygon",
            (60, 170, 90),
            (150, 100, 50),
            ["green triangle {} brown basket"],
        ),
        (
            "square_jar.png",
            "rectangle",
            (210, 50, 50),
            (150, 150, 160),
            ["red square {} glass jar"],
        ),
        ("disc_cup.png", "ellipse", (130, 60, 170), (230, 200, 40), ["purple disc {} yellow cup"]),
    )
    for name, shape, colour, container, templates in specs:
        img = Image.new("RGB", (s, s), paper)
        draw = ImageDraw.Draw(img)
        # An open container: floor and two walls, the thing sitting inside it.
        left, right, top, bottom = s * 0.18, s * 0.82, s * 0.35, s * 0.85
        width = max(3, s // 24)
        draw.line(
            [(left, top), (left, bottom), (right, bottom), (right, top)],
            fill=container,
            width=width,
        )
        box = (s * 0.34, s * 0.5, s * 0.66, s * 0.82)
        if shape == "ellipse":
            draw.ellipse(box, fill=colour)
        elif shape == "rectangle":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon(
                [((box[0] + box[2]) / 2, box[1]), (box[2], box[3]), (box[0], box[3])], fill=colour
            )
        out[name] = (img, templates)
    return out


def montage_thumbnail(
    images: list[Any], caption: str, side: int = 384, look: dict[str, Any] | None = None
) -> bytes:
    """A 2x2 montage of the exemplars over a caption band, as a JPEG (ReVersion's thumbnails)."""
    from PIL import Image

    band, cell = 44, side // 2
    img = Image.new("RGB", (side, side + band), (32, 32, 36))
    for i, image in enumerate(images[:4]):
        img.paste(
            image.resize((cell - 4, cell - 4), Image.LANCZOS),
            ((i % 2) * cell + 2, (i // 2) * cell + 2),
        )
    return decorate(img, caption, look or {}, side)


# -- example images and thumbnails ------------------------------------------------------------
def example_images(size: int = 256) -> dict[str, Any]:
    """A: an orange disc; A': the same disc as a black line drawing; B: a green triangle.

    The analogy is "colour shape -> line drawing"; the expected B' is a triangle outline.
    """
    from PIL import Image, ImageDraw

    paper = (250, 247, 240)
    s = size

    def canvas():
        img = Image.new("RGB", (s, s), paper)
        return img, ImageDraw.Draw(img)

    disc = (s * 0.2, s * 0.2, s * 0.8, s * 0.8)
    a, draw = canvas()
    draw.ellipse(disc, fill=(240, 140, 40), outline=(170, 80, 20), width=max(2, s // 64))
    draw.ellipse((s * 0.32, s * 0.3, s * 0.45, s * 0.42), fill=(252, 200, 130))  # highlight
    a_prime, draw = canvas()
    draw.ellipse(disc, outline=(20, 20, 20), width=max(2, s // 40))
    b, draw = canvas()
    triangle = [(s * 0.5, s * 0.16), (s * 0.84, s * 0.8), (s * 0.16, s * 0.8)]
    draw.polygon(triangle, fill=(60, 170, 90), outline=(30, 100, 50))
    draw.line(triangle + [triangle[0]], fill=(30, 100, 50), width=max(2, s // 64))
    # The second example pair: the same change on a blue square.
    square = (s * 0.24, s * 0.24, s * 0.76, s * 0.76)
    a2, draw = canvas()
    draw.rectangle(square, fill=(60, 110, 220), outline=(30, 60, 140), width=max(2, s // 64))
    a2_prime, draw = canvas()
    draw.rectangle(square, outline=(20, 20, 20), width=max(2, s // 40))
    # B with a region of interest painted on it (the triangle's top): transparent there.
    alpha = Image.new("L", (s, s), 255)
    ImageDraw.Draw(alpha).rectangle((s * 0.3, s * 0.1, s * 0.7, s * 0.5), fill=0)
    b_region = b.copy()
    b_region.putalpha(alpha)
    return {
        IMAGE_A: a,
        IMAGE_A_PRIME: a_prime,
        IMAGE_B: b,
        IMAGE_B_REGION: b_region,
        IMAGE_A2: a2,
        IMAGE_A2_PRIME: a2_prime,
    }


def png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def decorate(img: Any, caption: str, look: dict[str, Any], side: int, cell: Any = None) -> bytes:
    """The caption band in the template's colour, its badge, what its B' cell shows; a JPEG."""
    from comfyui_analogist.analogist_pixels import marks
    from PIL import ImageDraw

    draw = ImageDraw.Draw(img)
    colour = tuple(look.get("colour", (32, 32, 36)))
    draw.rectangle((0, side, img.width, img.height), fill=colour)
    font = marks.label_font(22 if len(caption) < 32 else 19)
    width = draw.textlength(caption, font=font)
    draw.text(((side - width) / 2, side + 10), caption, font=font, fill=(255, 255, 255))
    if cell is not None:  # B': what the template does there
        x0, y0, x1, y1 = cell
        cx, cy, size = (x0 + x1) / 2, (y0 + y1) / 2, x1 - x0
        kind = look.get("b_prime", "?")
        light = (235, 235, 235)
        if kind == "edges":  # the ControlNet holds B's outline
            draw.polygon(
                [
                    (cx, y0 + size * 0.18),
                    (x1 - size * 0.18, y1 - size * 0.2),
                    (x0 + size * 0.18, y1 - size * 0.2),
                ],
                outline=light,
                width=3,
            )
        elif kind == "best":  # four candidates, the best one marked
            half = size / 2
            for i in range(4):
                bx, by = x0 + (i % 2) * half, y0 + (i // 2) * half
                draw.rectangle(
                    (bx + 4, by + 4, bx + half - 4, by + half - 4), outline=light, width=2
                )
                q = marks.label_font(int(half * 0.5))
                draw.text((bx + half / 2, by + half / 2), "?", font=q, fill=light, anchor="mm")
            draw.rectangle((x0 + 2, y0 + 2, x0 + half - 2, y0 + half - 2), outline=colour, width=5)
        elif kind == "region":  # only the painted part of B changes
            box = (x0 + size * 0.3, y0 + size * 0.1, x0 + size * 0.7, y0 + size * 0.5)
            for offset in (0, -size):  # on B (left of B') and on B'
                shifted = (box[0] + offset, box[1], box[2] + offset, box[3])
                draw.rectangle(shifted, outline=(249, 168, 37), width=4)
            q = marks.label_font(int(size * 0.3))
            draw.text((cx, cy + size * 0.15), "?", font=q, fill=light, anchor="mm")
        elif kind == "vlm":  # a vision model writes the prompt
            q = marks.label_font(int(size * 0.13))
            draw.rounded_rectangle(
                (x0 + 10, cy - size * 0.2, x1 - 10, cy + size * 0.2),
                radius=12,
                fill=(245, 245, 245),
            )
            draw.text(
                (cx, cy),
                '"a triangle\nline drawing"',
                font=q,
                fill=(20, 20, 20),
                anchor="mm",
                align="center",
            )
        else:
            q = marks.label_font(int(size * 0.45))
            draw.text((cx, cy), "?", font=q, fill=light, anchor="mm")
    badge = look.get("badge")
    if badge:
        bfont = marks.label_font(18)
        bw = draw.textlength(badge, font=bfont)
        draw.rounded_rectangle(
            (side - bw - 26, 6, side - 6, 36),
            radius=8,
            fill=colour,
            outline=(255, 255, 255),
            width=2,
        )
        draw.text((side - bw - 16, 11), badge, font=bfont, fill=(255, 255, 255))
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def thumbnail(
    images: dict[str, Any],
    arrangement: str,
    caption: str,
    side: int = 384,
    pairs: int = 1,
    look: dict[str, Any] | None = None,
) -> bytes:
    """The labelled grid (what the paper shows GPT-4V) over a caption band, as a JPEG."""
    import numpy as np
    import torch
    from comfyui_analogist.analogist_pixels import grid as grid_math
    from comfyui_analogist.analogist_pixels import marks
    from PIL import Image

    def tensor(img):
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]

    examples = ((tensor(images[IMAGE_A2]), tensor(images[IMAGE_A2_PRIME])),)[: pairs - 1]
    composed = grid_math.compose_grids(
        tensor(images[IMAGE_A]),
        tensor(images[IMAGE_A_PRIME]),
        tensor(images[IMAGE_B]),
        256,
        256,
        2,
        "stretch",
        arrangement,
        examples=examples,
    )
    marked = marks.mark_grids(composed.grid_blank, composed.layout)
    pixels = (marked[0].clamp(0, 1).numpy() * 255).round().astype("uint8")
    labelled = Image.fromarray(pixels)
    scale = side / max(labelled.size)  # a taller grid (several pairs) keeps its shape
    grid = labelled.resize(
        (round(labelled.width * scale), round(labelled.height * scale)), Image.LANCZOS
    )
    band = 44
    img = Image.new("RGB", (side, side + band), (32, 32, 36))
    gx, gy = (side - grid.width) // 2, (side - grid.height) // 2
    img.paste(grid, (gx, gy))
    rows = pairs + 1
    cell = (
        gx + grid.width / 2,
        gy + grid.height * (rows - 1) / rows,
        gx + grid.width,
        gy + grid.height,
    )
    return decorate(img, caption, look or {}, side, cell)
