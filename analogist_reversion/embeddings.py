"""The learned ``<R>`` on disk: ComfyUI's embedding file, the official file, resume state.

Files are written under a temporary name in the target folder and renamed into place, so
an interrupted write never leaves a partial file under the real name, and nothing is ever
written over an existing file.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import torch

EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth", ".ckpt")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class EmbeddingNameError(ValueError):
    """The requested name is unusable or taken; the message says what to change."""


def check_name(name: str) -> str:
    name = (name or "").strip()
    if name.endswith(".safetensors"):
        name = name[: -len(".safetensors")]
    if not _NAME.match(name):
        raise EmbeddingNameError(
            f"name {name!r} is not usable as an embedding name; use letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, at most 100 characters (e.g. painted_on)"
        )
    return name


def run_folder(folder: Path, name: str) -> Path:
    """Where a run keeps its intermediate embeddings, resume state and learned_embeds.bin."""
    return Path(folder) / f"{name}-training"


def final_path(folder: Path, name: str) -> Path:
    return Path(folder) / f"{name}.safetensors"


def taken_by(folders: list[Path], name: str) -> Path | None:
    """An existing embedding that ``embedding:<name>`` would load, if any."""
    for folder in folders:
        for suffix in ("",) + EMBEDDING_SUFFIXES:
            candidate = Path(folder) / f"{name}{suffix}"
            if candidate.exists():
                return candidate
    return None


def _write_new(path: Path, write) -> Path:
    """``write(tmp)`` then move to ``path``; refuses (FileExistsError) when ``path`` exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        write(tmp)
        if path.exists():
            raise FileExistsError(f"{path} already exists; it was not overwritten")
        try:
            os.link(tmp, path)  # fails if path appeared meanwhile; never replaces
        except (OSError, NotImplementedError) as exc:
            if isinstance(exc, FileExistsError):
                raise
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _replace(path: Path, write) -> Path:
    """``write(tmp)`` then atomically replace ``path`` (for files the run itself owns)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def comfy_embedding(r: torch.Tensor) -> dict[str, torch.Tensor]:
    """The safetensors dict ComfyUI's ``embedding:`` loader reads for SD1: clip_l, one row."""
    return {"clip_l": r.detach().float().cpu().reshape(1, -1).contiguous().clone()}


def save_comfy_embedding(path: Path, r: torch.Tensor, metadata: dict | None = None) -> Path:
    import safetensors.torch

    meta = {k: str(v) for k, v in (metadata or {}).items()}
    return _write_new(
        path, lambda tmp: safetensors.torch.save_file(comfy_embedding(r), str(tmp), metadata=meta)
    )


def save_official_bin(path: Path, r: torch.Tensor, placeholder: str = "<R>") -> Path:
    """The official ``learned_embeds.bin``: ``torch.save({"<R>": r})`` of a contiguous copy."""
    row = r.detach().float().cpu().contiguous().clone()
    return _write_new(path, lambda tmp: torch.save({placeholder: row}, str(tmp)))


def save_state(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Resume state: tensors plus a JSON description, in one safetensors file."""
    import safetensors.torch

    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata = {"reversion_state": json.dumps(meta)}
    return _replace(
        path, lambda tmp: safetensors.torch.save_file(flat, str(tmp), metadata=metadata)
    )


def load_state(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    import safetensors
    import safetensors.torch

    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["reversion_state"])
    return safetensors.torch.load_file(str(path)), meta
