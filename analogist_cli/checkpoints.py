"""Is a file an SD inpainting checkpoint? Answered from the file's header, no model load.

An inpainting UNet's first convolution takes 9 channels (4 latent + 1 mask + 4 latent of
the masked image); a plain one takes 4. In the single-file layout that
``CheckpointLoaderSimple`` reads, that weight is
``model.diffusion_model.input_blocks.0.0.weight`` with shape ``[320, 9, 3, 3]`` for SD1.5.

* ``.safetensors``: the shape is in the JSON header (8-byte length, then JSON).
* ``.ckpt`` / ``.pt`` / ``.pth`` (PyTorch zip): the shape is in ``data.pkl``, read with an
  unpickler that builds nothing but shape records (no torch import, no code from the file
  is run, the tensor data is never read).
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

FIRST_CONV = "model.diffusion_model.input_blocks.0.0.weight"
INPAINT_CHANNELS = 9
DOWNLOAD_HINT = (
    "Analogist needs a Stable Diffusion 1.5 *inpainting* checkpoint (its UNet takes 9 input "
    "channels). Download sd-v1-5-inpainting.ckpt (4.3 GB) from the model card "
    "runwayml/stable-diffusion-inpainting on Hugging Face (mirrored at "
    "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-inpainting), put it into "
    "ComfyUI/models/checkpoints/ (for scripts/run.sh: ~/.cache/analogist-comfyui/models/"
    "checkpoints/), and pass its path with --checkpoint."
)


class CheckpointError(ValueError):
    """The file is missing, unreadable, or not an SD inpainting checkpoint."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    unet_in_channels: int


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) != 8:
            raise CheckpointError(f"{path}: too short to be a .safetensors file")
        (length,) = struct.unpack("<Q", head)
        if length <= 0 or length > 100_000_000:
            raise CheckpointError(f"{path}: not a .safetensors file (header length {length})")
        raw = file.read(length)
        if len(raw) != length:
            raise CheckpointError(f"{path}: truncated (its header is cut off); download it again")
        try:
            header = json.loads(raw)
        except ValueError as exc:
            raise CheckpointError(f"{path}: not a .safetensors file (bad header: {exc})") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a .safetensors file (its header is not a table)")
    # The tensors' bytes follow the header; the header says where each one ends. A file
    # cut short (an interrupted download) passes a header-only check and then fails deep
    # inside ComfyUI's loader with no file name, so the size is checked here.
    ends = [
        v["data_offsets"][1]
        for v in header.values()
        if isinstance(v, dict)
        and isinstance(v.get("data_offsets"), list)
        and len(v["data_offsets"]) == 2
        and isinstance(v["data_offsets"][1], int)
    ]
    needed = 8 + length + max(ends, default=0)
    size = path.stat().st_size
    if size < needed:
        raise CheckpointError(
            f"{path}: truncated: the file has {size:,} bytes but its header describes "
            f"{needed:,}. It is probably an interrupted download: download it again."
        )
    return {k: v["shape"] for k, v in header.items() if isinstance(v, dict) and "shape" in v}


class _Shape:
    def __init__(self, size):
        self.shape = list(size)


class _Stub:
    """Stands in for any class a checkpoint's pickle names; records nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _Stub()


def _rebuild_tensor(storage, offset, size, *args, **kwargs):
    return _Shape(size)


class _ShapeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _rebuild_tensor
        if module == "collections" and name == "OrderedDict":
            return dict
        return _Stub

    def persistent_load(self, pid):
        return None


def _torch_zip_shapes(path: Path) -> dict[str, list[int]]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(
            f"{path}: not a PyTorch zip checkpoint ({exc}); convert it to .safetensors"
        ) from exc
    with archive:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not names:
            raise CheckpointError(f"{path}: no data.pkl inside; not a PyTorch checkpoint")
        try:
            data = _ShapeUnpickler(archive.open(names[0])).load()
        except Exception as exc:
            raise CheckpointError(
                f"{path}: could not read its layout ({type(exc).__name__}: {exc})"
            ) from exc
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: no state dict inside")
    return {k: v.shape for k, v in data.items() if isinstance(v, _Shape)}


def tensor_shapes(path: Path) -> dict[str, list[int]]:
    if path.suffix.lower() == ".safetensors":
        return _safetensors_shapes(path)
    if path.suffix.lower() in (".ckpt", ".pt", ".pth", ".bin"):
        return _torch_zip_shapes(path)
    raise CheckpointError(
        f"{path}: unknown checkpoint type {path.suffix!r}; use .safetensors or .ckpt"
    )


def check_inpainting_checkpoint(path: str | Path) -> CheckpointInfo:
    """The checkpoint's UNet input channels, or a :class:`CheckpointError` saying what is wrong."""
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}\n{DOWNLOAD_HINT}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    try:
        shapes = tensor_shapes(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc})") from exc
    shape = shapes.get(FIRST_CONV)
    if shape is None:
        raise CheckpointError(
            f"{path}: no {FIRST_CONV} in it, so it is not a single-file Stable Diffusion "
            f"1.x/2.x checkpoint (a LoRA, a VAE, a diffusers folder's part?).\n{DOWNLOAD_HINT}"
        )
    channels = int(shape[1])
    if channels != INPAINT_CHANNELS:
        raise CheckpointError(
            f"{path}: its UNet takes {channels} input channels, so it is not an inpainting model "
            f"(those take {INPAINT_CHANNELS}). Analogist fills the B' cell by inpainting.\n{DOWNLOAD_HINT}"
        )
    return CheckpointInfo(path, channels)


def run_sh_checkpoints() -> Path:
    """``models/checkpoints`` of the ComfyUI working folder that ``scripts/run.sh`` uses."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = Path(os.environ.get("ANALOGIST_COMFYUI_DIR") or cache / "analogist-comfyui")
    return base.expanduser() / "models" / "checkpoints"


def find_checkpoint(folder: Path) -> Path | None:
    """The first SD inpainting checkpoint in ``folder`` (by name), if any."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        try:
            check_inpainting_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None


def checkpoint_for(settings_checkpoint: str | None, servers: list[str], log=None) -> str:
    """The checkpoint argument checked for the mode: a local inpainting file, or a name.

    Without one (and without servers), the inpainting checkpoint in scripts/run.sh's
    ComfyUI folder is used, so both commands share one download.
    """
    if not settings_checkpoint:
        folder = run_sh_checkpoints()
        found = None if servers else find_checkpoint(folder)
        if found is None:
            raise CheckpointError(
                f"no --checkpoint given, and no inpainting checkpoint in {folder}.\n{DOWNLOAD_HINT}"
            )
        print(f"[analogist] using the checkpoint {found}", file=log or sys.stderr, flush=True)
        return str(found.resolve())
    path = Path(settings_checkpoint).expanduser()
    if servers:
        if path.exists():  # a local file: check it, the servers know it by its name
            check_inpainting_checkpoint(path)
        return path.name
    check_inpainting_checkpoint(path)
    return str(path.resolve())
