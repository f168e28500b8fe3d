"""The user's files and options, checked before anything runs: each error says which input and how to fix it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..analogist_pixels.image_files import ImageFileError, check_image_file

# -- several example pairs (--example A2 A2') -------------------------------------------------
# Grid Compose's own a, a_prime are pair 1; with 4 pairs at most (analogist_pixels.layout's
# MAX_PAIRS; not imported: ``python -m analogist`` runs without the pack's torch modules,
# tests/runner/test_cli.py checks the two agree).
MAX_EXTRA_EXAMPLES = 3
PACK_ROOT = Path(__file__).resolve().parents[1]


MAX_CANDIDATES = 64  # every candidate is a full sampling run in one batch (memory grows with N)


CLIP_VISION_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")


EXAMPLES = PACK_ROOT / "workflows" / "images"


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class InputError(ValueError):
    """Bad user input: the message says which and how to fix it."""


@dataclass
class Settings:
    a: Path
    a_prime: Path
    b: list[Path]
    out: Path
    checkpoint: str  # a path (embedded) or the server's checkpoint name
    workflow: str = "manual"
    prompt: str | None = None
    steps: int | None = None
    cell: int | None = None
    seed: int | None = None
    denoise: float | None = None
    vlm_base_url: str | None = None
    vlm_model: str | None = None
    candidates: int | None = None  # sample this many B' and keep the best (needs clip_vision)
    clip_vision: str | None = None  # a path (embedded) or the server's CLIP vision model name
    b_region: Path | None = None  # --b-region: mask on B, white = may change
    # Example pairs 2..K (``--example A2 A2'``), after --a / --a-prime.
    examples: list[tuple[Path, Path]] = field(default_factory=list)


# -- input checks --------------------------------------------------------------------------
def check_image(path: Path, role: str, *, mask: bool = False) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{role}: file not found: {path}")
    if not path.is_file():
        raise InputError(f"{role}: not a file: {path}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{role}: {path} is too large to load safely ({exc}). Downscale it: the grid "
            "cells are at most 4096 px, so a few thousand pixels per side is plenty."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise InputError(f"{role}: cannot read {path} as an image ({exc})") from exc
    try:
        check_image_file(path, role, mask=mask)
    except ImageFileError as exc:
        raise InputError(str(exc)) from None
    return path


def check_out(path: Path) -> Path:
    """``--out`` must be a folder we can create or write into; nothing is created here
    (the folder appears only once every check has passed)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"--out: {path} is a file, not a folder; give a folder for the results")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--out: {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write into" if existing == path else f"create {path} in"
        raise InputError(
            f"--out: cannot {what} {existing} (no write permission); choose another folder"
        )
    return path


def make_out(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"--out: cannot create the folder {path} ({exc.strerror or exc})"
        ) from None


def b_images(path: Path) -> list[Path]:
    """One image, or every image in a folder (sorted by name)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError(f"--b: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
        return [check_image(p, "--b") for p in found]
    return [check_image(path, "--b")]


def check_candidates(
    candidates: int | None, clip_vision: str | None, workflow: str, servers: list[str]
) -> str | None:
    """``--candidates N`` with ``--clip-vision``: checked together; the CLIP vision model as
    the run needs it (a local file's path embedded, the name the servers list otherwise)."""
    if candidates is None:
        if clip_vision is not None:
            raise InputError("--clip-vision goes with --candidates N (it scores the N candidates)")
        return None
    if not 2 <= candidates <= MAX_CANDIDATES:
        raise InputError(
            f"--candidates must be between 2 and {MAX_CANDIDATES} (all are sampled in one batch, "
            f"so memory grows with it), got {candidates}"
        )
    if workflow != "manual":
        raise InputError(
            "--candidates goes with --workflow manual (it runs workflows/analogist_best_of_n.json, "
            "the typed-prompt graph); give the B' prompt with --prompt"
        )
    if not clip_vision:
        raise InputError(
            "--candidates needs --clip-vision: a CLIP vision model file (e.g. the ViT-L/14 or "
            "ViT-H/14 image encoder IPAdapter uses, from ComfyUI/models/clip_vision) that "
            "scores each candidate by the paper's CLIP direction metric"
        )
    path = Path(clip_vision).expanduser()
    if servers and not path.exists():
        return clip_vision  # a name the servers are asked for
    if not path.is_file():
        raise InputError(
            f"--clip-vision: file not found: {path}. Give the path of a CLIP vision model file"
            + (
                " (with --server: a path, or the name in the servers' models/clip_vision)"
                if servers
                else ""
            )
        )
    if path.suffix.lower() not in CLIP_VISION_SUFFIXES:
        raise InputError(
            f"--clip-vision: {path.name} is not a model file ({', '.join(CLIP_VISION_SUFFIXES)}); "
            "give a CLIP vision model such as CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
        )
    return path.name if servers else str(path.resolve())


# -- region of interest on B (--b-region) ----------------------------------------------------
def check_b_region(path: Path | None, b: list[Path]) -> Path | None:
    """``--b-region``: an image at B's size (every B's, for a folder), white = may change."""
    if path is None:
        return None
    path = check_image(path, "--b-region", mask=True)
    # The sizes the nodes see: after the EXIF orientation, as Load Image applies it.
    size = check_image_file(path, "--b-region", mask=True)
    for one in b:
        b_size = check_image_file(one, "--b")
        if b_size != size:
            raise InputError(
                f"--b-region: {path.name} is {size[0]}x{size[1]} px but B {one.name} is "
                f"{b_size[0]}x{b_size[1]} px (as shown, after its EXIF orientation); draw the "
                "region on B at B's size (white = may change, black = keep)"
            )
    return path


def example_pairs(pairs: list | None) -> list[tuple[Path, Path]]:
    """``--example A A'`` values, checked: readable images, at most MAX_EXTRA_EXAMPLES."""
    pairs = list(pairs or [])
    if len(pairs) > MAX_EXTRA_EXAMPLES:
        raise InputError(
            f"--example: {len(pairs)} extra pairs, but at most {MAX_EXTRA_EXAMPLES} fit (4 "
            "pairs with --a/--a-prime): each pair adds a row of cells to the grid, and the "
            "UNet's attention time and memory grow with the square of the grid's size"
        )
    return [
        (
            check_image(Path(a), f"--example {k} (A)"),
            check_image(Path(a_prime), f"--example {k} (A')"),
        )
        for k, (a, a_prime) in enumerate(pairs, start=2)
    ]
