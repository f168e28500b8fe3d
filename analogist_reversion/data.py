"""Exemplars: images that share one relation, each with caption templates holding ``{}``.

Two sources: the official folder layout (images plus ``text.json`` mapping each file name
to its templates) and an image batch with templates given as text. Both end as
``Exemplar`` items: the image resized to the training resolution with PIL bicubic (aspect
not kept, no crop) and scaled to -1..1, as the official data loader does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .text import check_templates

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ExemplarError(ValueError):
    """Bad exemplar input; the message names the input and the fix."""


@dataclass(frozen=True)
class Exemplar:
    name: str
    pixels: torch.Tensor  # (3, res, res) float32 in -1..1
    templates: tuple[str, ...]


def prepare_pixels(image: Image.Image, resolution: int) -> torch.Tensor:
    """RGB, bicubic to resolution x resolution, then x / 127.5 - 1 (CHW float32)."""
    image = image.convert("RGB").resize((resolution, resolution), resample=Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1).contiguous()


def read_text_json(folder: Path) -> dict[str, list[str]]:
    path = folder / "text.json"
    if not path.is_file():
        raise ExemplarError(
            f"folder {folder} has no text.json; add one mapping each image file name to its caption "
            'templates, e.g. {"cat_stone.png": ["cat {} stone"]}'
        )
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExemplarError(f"{path} is not valid JSON ({exc}); fix the file") from exc
    if not isinstance(mapping, dict):
        raise ExemplarError(f"{path} must be a JSON object {{file name: [templates]}}")
    out = {}
    for name, templates in mapping.items():
        if isinstance(templates, str):
            templates = [templates]
        if not isinstance(templates, list):
            raise ExemplarError(
                f"{path}: the entry for {name!r} must be a list of caption templates"
            )
        try:
            out[name] = check_templates(templates, f"{path} entry {name!r}")
        except ValueError as exc:
            raise ExemplarError(str(exc)) from exc
    return out


def exemplars_from_folder(folder: Path, resolution: int) -> list[Exemplar]:
    """The official layout: image files plus ``text.json``; every image needs an entry."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExemplarError(f"exemplar folder {folder} does not exist or is not a folder")
    images = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not images:
        raise ExemplarError(
            f"exemplar folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); put 4-10 "
            "images that share one relation there, with text.json"
        )
    mapping = read_text_json(folder)
    names = {p.name for p in images}
    missing_captions = sorted(names - set(mapping))
    if missing_captions:
        raise ExemplarError(
            f"{folder / 'text.json'} has no caption templates for {missing_captions}; add an entry "
            "for each image"
        )
    missing_images = sorted(set(mapping) - names)
    if missing_images:
        raise ExemplarError(
            f"{folder / 'text.json'} names {missing_images}, which are not image files in {folder}; "
            "fix the names or add the images"
        )
    out = []
    for path in images:
        with Image.open(path) as image:
            # As a viewer shows it (and ComfyUI's Load Image loads it): EXIF orientation applied.
            pixels = prepare_pixels(ImageOps.exif_transpose(image), resolution)
        out.append(Exemplar(path.name, pixels, tuple(mapping[path.name])))
    return out


def parse_caption_lines(text: str) -> list[list[str]]:
    """One line per image, templates on a line separated by ``|``; blank lines skipped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [[t.strip() for t in line.split("|") if t.strip()] for line in lines]


def exemplars_from_images(images: torch.Tensor, captions: str, resolution: int) -> list[Exemplar]:
    """An IMAGE batch (B, H, W, C, 0..1) with caption lines: one line for all, or one per image."""
    if images.ndim != 4 or images.shape[0] < 1:
        raise ExemplarError(
            f"exemplar images must be an IMAGE batch (B, H, W, C), got shape {tuple(images.shape)}"
        )
    lines = parse_caption_lines(captions)
    count = images.shape[0]
    if not lines:
        raise ExemplarError(
            "captions is empty; write caption templates with {} where the relation goes, "
            "e.g. 'cat {} stone' (one line for all images, or one line per image)"
        )
    if len(lines) not in (1, count):
        raise ExemplarError(
            f"captions has {len(lines)} lines for {count} images; give one line per image "
            "(in batch order) or a single line for all of them"
        )
    if len(lines) == 1:
        lines = lines * count
    out = []
    for i in range(count):
        try:
            templates = check_templates(lines[i], f"captions line {min(i, len(lines) - 1) + 1}")
        except ValueError as exc:
            raise ExemplarError(str(exc)) from exc
        array = (
            (images[i, :, :, :3].detach().float().cpu().clamp(0, 1) * 255.0).round().to(torch.uint8)
        )
        if array.shape[-1] == 1:
            array = array.expand(-1, -1, 3)
        pil = Image.fromarray(array.numpy())
        out.append(Exemplar(f"image {i}", prepare_pixels(pil, resolution), tuple(templates)))
    return out
