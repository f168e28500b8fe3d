"""The user's image files as ComfyUI's Load Image will see them (issue 23); used by the
headless runner (its uploads) and the ReVersion node (its exemplar folders).

Load Image keeps every frame of an animated file, turns the pixels of a 16/32-bit or float
image to white (Pillow's ``convert("RGB")`` clips them at 255), drops the alpha channel
(showing the colours hidden under transparent pixels) and applies the EXIF orientation.
Rather than let any of that change an input silently, the runner refuses what it cannot
convert faithfully and uploads everything else as the plain picture a viewer shows: the
EXIF orientation applied, 8-bit RGB, one frame, as PNG. Such a file loads the same way on
every ComfyUI (Pillow or PyAV decoding alike), and its size is the one the nodes see.
"""

from __future__ import annotations

import io
from pathlib import Path

# Pillow modes that hold 8 bits per channel: their RGB conversion is exact.
EIGHT_BIT_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"}
HAS_ALPHA = {"LA", "La", "PA", "RGBA", "RGBa"}


class ImageFileError(ValueError):
    """An image the runner cannot pass on unchanged; the message says why and what to do."""


def _open_checked(path: Path, role: str, *, mask: bool):
    """The first frame, EXIF-rotated, after the checks; the caller closes ``source``."""
    from PIL import Image, ImageOps

    source = Image.open(path)
    try:
        frames = getattr(source, "n_frames", 1)
        if frames > 1:
            raise ImageFileError(
                f"{role}: {path.name} is animated ({frames} frames); ComfyUI's Load Image would "
                "turn it into one image per frame (and one B' each). Save the frame you want "
                "as a still PNG or JPEG"
            )
        source.load()
        mode = source.mode
        if mode not in EIGHT_BIT_MODES:
            raise ImageFileError(
                f"{role}: {path.name} has {_depth(mode)} pixels (Pillow mode {mode!r}); ComfyUI's "
                "Load Image clips them at 255, so the image loads (nearly) white. Save it as an "
                "8-bit RGB PNG or JPEG"
            )
        image = ImageOps.exif_transpose(source)
        if not mask and _transparent(image):
            raise ImageFileError(
                f"{role}: {path.name} has transparent pixels; ComfyUI's Load Image drops the "
                "alpha channel and shows the colours hidden under them. Flatten it onto a "
                "background (e.g. white) and save it without transparency"
            )
        return source, image
    except BaseException:
        source.close()
        raise


def _depth(mode: str) -> str:
    if mode == "F" or mode.startswith("F;"):
        return "floating-point"
    if mode.startswith("I;16") or mode.endswith("16"):
        return "16-bit"
    if mode.startswith("I"):
        return "32-bit integer"
    return "high bit depth"


def _transparent(image) -> bool:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in HAS_ALPHA:
        return False
    low, _ = image.getchannel("A").getextrema()
    return low < 255


def check_image_file(path: Path, role: str, *, mask: bool = False) -> tuple[int, int]:
    """Raise :class:`ImageFileError` for an image Load Image would change; else the
    (width, height) the nodes see (after the EXIF orientation)."""
    source, image = _open_checked(path, role, mask=mask)
    try:
        return image.size
    finally:
        source.close()


def upload_bytes(path: Path, role: str, *, mask: bool = False) -> bytes:
    """The PNG the runner uploads for ``path``: what a viewer shows, as 8-bit RGB.

    For a region mask (``mask=True``) transparency is allowed: Load Image (as Mask) reads
    the red channel, whatever the alpha, and so does this conversion.
    """
    source, image = _open_checked(path, role, mask=mask)
    try:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue()
    finally:
        source.close()
