"""Shared fixtures: the goldens' tiny weights written as official files, loaded once."""

from __future__ import annotations

import pytest
import torch
from support import mimicbrush as smb


@pytest.fixture(scope="session")
def official_files(tmp_path_factory):
    """``mimicbrush.bin`` and ``depth_anything_vitb14.pth`` rebuilt from the manifest."""
    return smb.write_official_files(tmp_path_factory.mktemp("mimicbrush"))


@pytest.fixture(scope="session")
def models(official_files):
    from comfyui_analogist.analogist_mimicbrush.pipeline import load_models

    return load_models(
        str(official_files["mimicbrush"]),
        str(official_files["depth"]),
        dtype=torch.float32,
        heads=smb.unet_heads(),
    )


@pytest.fixture(scope="session")
def vae():
    return smb.tiny_vae()


@pytest.fixture
def pytorch_attention(monkeypatch):
    smb.use_pytorch_attention(monkeypatch)


@pytest.fixture(scope="session")
def trace():
    return smb.load_tensors("trace.safetensors")


@pytest.fixture(scope="session")
def golden_inputs():
    return {
        "target": smb.image_tensor("inputs/target.png"),
        "mask": smb.image_tensor("inputs/mask.png"),
        "reference": smb.image_tensor("inputs/reference.png"),
    }
