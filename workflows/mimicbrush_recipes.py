"""MimicBrush's example workflows (issue 20), their example images and thumbnails.

Used by ``build_workflows.py`` (which imports this module after the pack): ``USED_NODES``
and ``WORKFLOWS`` join its lists, ``render_all`` adds these files to its own. The graph is
the official pipeline in ComfyUI nodes: MimicBrush Loader + Load VAE (sd-vae-ft-mse) ->
MimicBrush Apply (target with its painted mask, reference) -> SamplerCustom with the
diffusers-exact DDIM pair (50 steps, strength 1, CFG 5, as the official demo) -> VAE Decode
-> MimicBrush Paste (Apply's crop connected) -> Save Image.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from comfyui_analogist.analogist_cli.workflow_format import Graph

HERE = Path(__file__).resolve().parent
IMAGES = HERE / "images"

USED_NODES = (
    "AnalogistMimicBrushLoader",
    "AnalogistMimicBrushApply",
    "AnalogistMimicBrushPaste",
    "VAELoader",
    "LoadImage",
    "SamplerCustom",
    "AnalogistDDIMSigmas",
    "AnalogistDDIMSampler",
    "VAEDecode",
    "SaveImage",
    "PreviewImage",
)
WORKFLOWS = ("mimicbrush", "mimicbrush_texture")

MIMICBRUSH_FILE = "mimicbrush.bin"
DEPTH_MODEL = "depth_anything/depth_anything_vitb14.pth"
VAE = "vae-ft-mse-840000-ema-pruned.safetensors"  # sd-vae-ft-mse as one file
STEPS, STRENGTH, CFG, SEED = 50, 1.0, 5.0, 0  # the official demo's defaults

# The example images (shipped in workflows/images/, copied into ComfyUI/input/). The targets
# carry their mask as the mask editor saves it: transparent (alpha 0) where to repaint.
IMAGE_TARGET = "mimicbrush_example_target.png"  # a plain vase, its body masked
IMAGE_REFERENCE = "mimicbrush_example_reference.png"  # a striped, dotted vase
IMAGE_TEXTURE_TARGET = "mimicbrush_example_texture_target.png"  # a ball, masked
IMAGE_TEXTURE = "mimicbrush_example_texture.png"  # a brick wall

CAPTIONS = {
    "mimicbrush": "MimicBrush: imitate a region",
    "mimicbrush_texture": "MimicBrush: texture, shape kept",
}

NOTE_FILES = (
    "WHAT TO LOAD WHERE (nothing is downloaded)\n"
    f"* {MIMICBRUSH_FILE} (ali-vilab/MimicBrush on Hugging Face) in ComfyUI/models/mimicbrush/.\n"
    "* depth_anything_vitb14.pth (Depth Anything V1, ViT-B/14; LiheYoung/Depth-Anything) in "
    "ComfyUI/models/depth_anything/ or next to mimicbrush.bin in models/mimicbrush/. Needed "
    "with shape control off too.\n"
    f"* The VAE sd-vae-ft-mse ({VAE} from stabilityai/sd-vae-ft-mse-original, or the diffusers "
    "file renamed) in ComfyUI/models/vae/.\n"
    "* Target: paint the region to repaint in Load Image's mask editor (right click > Open in "
    "MaskEditor). Reference: the image to imitate. The example images ship with the pack "
    "(workflows/images/, copied into ComfyUI/input/).\n"
    "* The paper's sampling: 50 steps of diffusers DDIM, CFG 5. About 2 UNet passes per step "
    "plus the reference UNet; at 512 x 512 on a GPU, seconds; on a CPU, many minutes."
)
NOTES = {
    "mimicbrush": "MIMICBRUSH: IMITATE A REGION OF A REFERENCE\n"
    "The masked region of the target is repainted to look like the matching part of the "
    "reference (here: the plain vase takes the striped vase's look). No prompt. Shape control "
    "is off, so the reference's shape may come along; turn it on to keep the target's shape "
    "(mimicbrush_texture.json). For a target much larger than 512 px, turn crop_around_mask "
    "on in MimicBrush Apply: Paste follows through the crop link.",
    "mimicbrush_texture": "MIMICBRUSH: TEXTURE TRANSFER, SHAPE KEPT\n"
    "shape_control on: the target's depth keeps the region's shape (the ball stays round) and "
    "only the texture comes from the reference (a brick wall). Good for materials and "
    "patterns; turn it off when the reference's object should bring its own shape.",
}


# The group titles workflow_finish.finish gives these graphs, by role (pictures, sampling).
GROUP_TITLES = {
    0: "Your pictures: the target (mask painted) and the reference",
    3: "MimicBrush and sampling (the official DDIM, 50 steps, CFG 5)",
}
HEADINGS = {  # the notes' first lines as the markdown heading shows them
    "MIMICBRUSH: IMITATE A REGION OF A REFERENCE": "MimicBrush: imitate a region of a reference",
    "MIMICBRUSH: TEXTURE TRANSFER, SHAPE KEPT": "MimicBrush: texture transfer, shape kept",
}


def build(defs: dict[str, dict], name: str) -> Graph:
    """One MimicBrush workflow's graph; ``build_workflows.build_mimicbrush`` adds the note
    and lays it out like every shipped workflow."""
    texture = name == "mimicbrush_texture"
    g = Graph(defs)
    loader = g.add(
        "AnalogistMimicBrushLoader",
        (0, 0),
        mimicbrush=MIMICBRUSH_FILE,
        depth_model=DEPTH_MODEL,
    )
    vae = g.add("VAELoader", (0, 160), "VAE (sd-vae-ft-mse)", vae_name=VAE)
    target = g.add(
        "LoadImage",
        (0, 280),
        "Target (paint the mask)",
        image=IMAGE_TEXTURE_TARGET if texture else IMAGE_TARGET,
    )
    reference = g.add(
        "LoadImage",
        (0, 640),
        "Reference (to imitate)",
        image=IMAGE_TEXTURE if texture else IMAGE_REFERENCE,
    )
    apply = g.add(
        "AnalogistMimicBrushApply",
        (360, 0),
        model=loader.out("model"),
        mimicbrush=loader.out("mimicbrush"),
        vae=vae.out("VAE"),
        target=target.out("IMAGE"),
        mask=target.out("MASK"),
        reference=reference.out("IMAGE"),
        shape_control=texture,
        samples_per_target=1,
        seed=SEED,
        crop_around_mask=False,
        crop_margin=0.25,
    )
    sigmas = g.add(
        "AnalogistDDIMSigmas",
        (360, 420),
        "DDIM sigmas (50 steps, strength 1)",
        model=apply.out("model"),
        steps=STEPS,
        strength=STRENGTH,
    )
    ddim = g.add("AnalogistDDIMSampler", (360, 600), "DDIM sampler (diffusers-exact)")
    sampler = g.add(
        "SamplerCustom",
        (720, 0),
        "Sampler (official: DDIM, CFG 5)",
        model=apply.out("model"),
        add_noise=True,
        noise_seed=SEED,
        cfg=CFG,
        positive=apply.out("positive"),
        negative=apply.out("negative"),
        sampler=ddim.out("SAMPLER"),
        sigmas=sigmas.out("SIGMAS"),
        latent_image=apply.out("latent"),
    )
    decoded = g.add("VAEDecode", (1080, 0), samples=sampler.out(0), vae=vae.out("VAE"))
    g.add("PreviewImage", (1080, 120), "The 512 x 512 square", images=decoded.out(0))
    paste = g.add(
        "AnalogistMimicBrushPaste",
        (1440, 0),
        images=decoded.out(0),
        target=target.out("IMAGE"),
        mask=target.out("MASK"),
        crop_around_mask=False,
        crop_margin=0.25,
        crop=apply.out("crop"),
    )
    g.add("SaveImage", (1440, 240), "Result", images=paste.out(0), filename_prefix=f"{name}/edit")
    return g


# -- example images ---------------------------------------------------------------------------
def example_images(size: int = 256) -> dict[str, Any]:
    """Drawn with Pillow from fixed shapes: deterministic, a few KB each."""
    from PIL import Image, ImageDraw

    s = size
    paper = (250, 247, 240)

    def vase(draw, fill, outline):
        draw.ellipse((s * 0.25, s * 0.35, s * 0.75, s * 0.88), fill=fill, outline=outline, width=3)
        draw.rectangle((s * 0.4, s * 0.14, s * 0.6, s * 0.42), fill=fill, outline=outline, width=3)

    def masked(img, box, ellipse):
        alpha = Image.new("L", (s, s), 255)
        shape = ImageDraw.Draw(alpha)
        (shape.ellipse if ellipse else shape.rectangle)(box, fill=0)
        out = img.copy()
        out.putalpha(alpha)
        return out

    target = Image.new("RGB", (s, s), paper)
    vase(ImageDraw.Draw(target), (200, 200, 205), (120, 120, 130))
    reference = Image.new("RGB", (s, s), (235, 238, 245))
    draw = ImageDraw.Draw(reference)
    vase(draw, (30, 60, 150), (20, 30, 90))
    for i in range(6):  # white stripes and dots on the body
        y = s * (0.45 + 0.07 * i)
        draw.line((s * 0.28, y, s * 0.72, y), fill=(245, 245, 250), width=3)
        draw.ellipse((s * 0.48, y + 6, s * 0.52, y + 12), fill=(240, 200, 60))

    ball = Image.new("RGB", (s, s), paper)
    draw = ImageDraw.Draw(ball)
    draw.rectangle((0, s * 0.8, s, s), fill=(190, 170, 140))  # a floor
    draw.ellipse((s * 0.25, s * 0.3, s * 0.75, s * 0.8), fill=(200, 60, 50), outline=(120, 30, 30))
    bricks = Image.new("RGB", (s, s), (200, 195, 185))  # mortar
    draw = ImageDraw.Draw(bricks)
    row = s // 8
    for r in range(8):
        shift = (r % 2) * row
        for c in range(-1, 5):
            x = c * 2 * row + shift
            draw.rectangle(
                (x + 2, r * row + 2, x + 2 * row - 2, (r + 1) * row - 2),
                fill=(170 + 10 * ((r + c) % 3), 70 + 8 * (c % 2), 50),
            )
    return {
        IMAGE_TARGET: masked(target, (s * 0.24, s * 0.34, s * 0.76, s * 0.89), ellipse=True),
        IMAGE_REFERENCE: reference,
        IMAGE_TEXTURE_TARGET: masked(ball, (s * 0.24, s * 0.29, s * 0.76, s * 0.81), ellipse=True),
        IMAGE_TEXTURE: bricks,
    }


def thumbnail(target: Any, reference: Any, caption: str, side: int = 384) -> bytes:
    """Target (masked region tinted) | reference, over a caption band, as a JPEG."""
    from comfyui_analogist.analogist_pixels import marks
    from PIL import Image, ImageDraw

    band, cell = 44, side // 2
    rgb = target.convert("RGB")
    tint = Image.new("RGB", rgb.size, (230, 40, 160))
    hole = target.getchannel("A").point(lambda a: 150 if a < 128 else 0)
    shown = Image.composite(tint, rgb, hole)
    img = Image.new("RGB", (side, side + band), (32, 32, 36))
    top = (side - cell) // 2
    for i, image in enumerate((shown, reference.convert("RGB"))):
        img.paste(image.resize((cell - 6, cell - 6), Image.LANCZOS), (i * cell + 3, top))
    font = marks.label_font(22)
    draw = ImageDraw.Draw(img)
    for i, label in enumerate(("target + mask", "reference")):
        width = draw.textlength(label, font=font)
        draw.text(
            (i * cell + (cell - width) / 2, top + cell + 6), label, font=font, fill=(220,) * 3
        )
    width = draw.textlength(caption, font=font)
    draw.text(((side - width) / 2, side + 9), caption, font=font, fill=(240, 240, 240))
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG", quality=85, optimize=True)
    return buffer.getvalue()


def render_all(defs: dict[str, dict]) -> dict[Path, bytes]:
    """This module's files: path -> exact bytes."""

    images = example_images()
    files: dict[Path, bytes] = {}
    for name, image in images.items():
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        files[IMAGES / name] = buffer.getvalue()
    pairs = {
        "mimicbrush": (IMAGE_TARGET, IMAGE_REFERENCE),
        "mimicbrush_texture": (IMAGE_TEXTURE_TARGET, IMAGE_TEXTURE),
    }
    for name in WORKFLOWS:  # the .json files: build_workflows.build_mimicbrush
        target, reference = pairs[name]
        files[HERE / f"{name}.jpg"] = thumbnail(images[target], images[reference], CAPTIONS[name])
    return files
