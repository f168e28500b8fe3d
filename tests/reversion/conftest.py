"""Fixtures: the goldens' tiny SD1 model written as a diffusers folder and loaded by the pack.

The UNet runs with ComfyUI's own PyTorch attention (what ``--use-pytorch-cross-attention``
selects); the CPU default, sub-quadratic attention, moves the UNet by about 1e-4.
"""

from __future__ import annotations

import pytest
from support import reversion as goldens


@pytest.fixture(scope="session")
def pytorch_attention():
    import comfy.ldm.modules.attention as attention

    saved = attention.optimized_attention
    attention.optimized_attention = attention.attention_pytorch
    yield
    attention.optimized_attention = saved


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return goldens.write_diffusers_folder(tmp_path_factory.mktemp("reversion-tiny-sd1"))


@pytest.fixture(scope="session")
def tiny(tiny_folder, pytorch_attention):
    from comfyui_analogist.analogist_reversion.diffusers_folder import load_sd1_folder

    return load_sd1_folder(tiny_folder)


@pytest.fixture(scope="session")
def tiny_parts(tiny):
    from comfyui_analogist.analogist_reversion.comfy_parts import (
        host_backprop_problem,
        parts_from_modules,
    )

    problem = host_backprop_problem()
    if problem is not None:  # ComfyUI 0.0.1: test_node.py checks that training is refused
        pytest.skip(f"no training on this host: {problem}")

    return parts_from_modules(tiny.diffusion_model, tiny.text_model, tiny.tokenizer)


@pytest.fixture(scope="session")
def record():
    return goldens.record()
