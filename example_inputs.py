"""Put the example pictures the shipped workflows load into ComfyUI's ``input/`` folder.

The workflows' Load Image nodes name ``analogist_example_*.png`` (and ReVersion's Learn node
the folder ``reversion_inside``). A Manager or registry install copies the pack, not
those pictures, so without this the templates stop at "Image not loaded". At load time
the pack copies each missing one from ``workflows/images/``.

Rules: a file that is already there is never touched (a user's own picture of the same
name stays, even if it differs: the workflow then loads it); nothing is written outside
``input/``; a failure to write is a logged warning, never a failed pack load.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

LOG = logging.getLogger("comfyui_analogist")
IMAGES = Path(__file__).resolve().parent / "workflows" / "images"
SUFFIXES = (".png", ".jpg", ".json")  # pictures and ReVersion's text.json captions


def _input_directory() -> Path | None:
    for name in ("folder_paths", "comfy.cmd.folder_paths"):  # the source tree; 0.0.1's package
        try:
            return Path(importlib.import_module(name).get_input_directory())
        except Exception:
            continue
    return None


def example_files(images: Path = IMAGES) -> list[Path]:
    """The shipped example files, relative to ``images`` (subfolders: exemplar sets)."""
    if not images.is_dir():
        return []
    return sorted(
        p.relative_to(images)
        for p in images.rglob("*")
        if p.is_file() and p.suffix.lower() in SUFFIXES
    )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def install_example_inputs(input_dir: Path | None = None, images: Path = IMAGES) -> list[Path]:
    """Copy every missing example file into ``input_dir``; return the files written.

    ``input_dir`` defaults to ComfyUI's input folder (``folder_paths.get_input_directory()``);
    without ComfyUI nothing happens.
    """
    target = input_dir if input_dir is not None else _input_directory()
    if target is None:
        return []
    written: list[Path] = []
    kept: list[str] = []
    for relative in example_files(images):
        destination = target / relative
        created = False
        try:
            if destination.exists() or destination.is_symlink():
                if (
                    destination.is_file()
                    and destination.read_bytes() != (images / relative).read_bytes()
                ):
                    kept.append(str(relative))
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            if not _inside(destination.parent, target):
                # A link inside input/ leading elsewhere: writing through it would leave input/.
                LOG.warning(
                    "Analogist: not copying the example %s: %s leads outside ComfyUI's input folder",
                    relative,
                    destination.parent,
                )
                continue
            data = (images / relative).read_bytes()
            # "x": create only; a file that appeared meanwhile is someone's and stays.
            with open(destination, "xb") as handle:
                created = True
                handle.write(data)
            written.append(destination)
        except FileExistsError:
            continue
        except OSError as error:
            LOG.warning(
                "Analogist: could not copy the example image %s into %s (%s). The example "
                "workflows will say 'Image not loaded': copy the pack's workflows/images/ "
                "into ComfyUI's input folder by hand.",
                relative,
                target,
                error,
            )
            if created:  # a half-written copy of ours
                try:
                    os.remove(destination)
                except OSError:
                    pass
    if kept:
        LOG.info(
            "Analogist: kept your own files in the input folder with the example images' names: %s",
            ", ".join(kept),
        )
    return written
