"""The transformer-block map, checked on real ComfyUI UNets with tiny widths."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from comfyui_analogist.analogist_attn.blocks import (
    describe_blocks,
    paper_layer_range,
    select_blocks,
    transformer_block_keys,
    transformer_block_levels,
)
from comfyui_analogist.analogist_attn.geometry import token_map_size

SD15_PAPER_ORDER = (
    [("input", n, 0) for n in (1, 2, 4, 5, 7, 8)]
    + [("middle", 0, 0)]
    + [("output", n, 0) for n in range(3, 12)]
)


def _unet(config: dict[str, Any], device: str = "meta") -> Any:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**config, device=device, operations=comfy.ops.disable_weight_init)


def _sd15_config() -> dict[str, Any]:
    """SD1.5's v1-inference.yaml structure at model_channels 32, as ComfyUI converts it."""
    from comfy.model_detection import convert_config

    return convert_config(
        {
            "image_size": 32,
            "in_channels": 4,
            "out_channels": 4,
            "model_channels": 32,
            "attention_resolutions": [4, 2, 1],
            "num_res_blocks": 2,
            "channel_mult": [1, 2, 4, 4],
            "num_heads": 8,
            "use_spatial_transformer": True,
            "transformer_depth": 1,
            "context_dim": 16,
            "use_linear_in_transformer": False,
            "legacy": False,
        }
    )


def _sdxl_config() -> dict[str, Any]:
    """ComfyUI's detected SDXL config with tiny widths."""
    return {
        "image_size": 32,
        "in_channels": 4,
        "out_channels": 4,
        "model_channels": 32,
        "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4],
        "transformer_depth": [0, 0, 2, 2, 10, 10],
        "transformer_depth_middle": 10,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "num_head_channels": 8,
        "use_spatial_transformer": True,
        "use_linear_in_transformer": True,
        "context_dim": 16,
        "num_classes": "sequential",
        "adm_in_channels": 16,
        "legacy": False,
    }


def test_sd15_has_the_papers_16_blocks_in_order() -> None:
    assert transformer_block_keys(_unet(_sd15_config())) == SD15_PAPER_ORDER


def test_sdxl_has_70_blocks_with_several_transformers_per_block() -> None:
    keys = transformer_block_keys(_unet(_sdxl_config()))
    assert len(keys) == 70
    assert keys[:4] == [("input", 4, 0), ("input", 4, 1), ("input", 5, 0), ("input", 5, 1)]
    assert keys[4:14] == [("input", 7, i) for i in range(10)]
    assert ("middle", 0, 9) in keys and ("output", 5, 1) == keys[-1]


def test_keys_are_those_comfy_dispatches_attention_patches_on() -> None:
    """Run a tiny SD1.5 UNet with a recording attn1 patch on every key: every key is
    called, in our order, on a token map inferred from an odd latent size."""
    unet = _unet(_sd15_config(), device="cpu")
    for param in unet.parameters():
        param.data.normal_(0, 0.02)
    keys = transformer_block_keys(unet)
    calls: list[tuple[tuple[str, int, int], tuple[int, int]]] = []

    def recorder(key: tuple[str, int, int]) -> Any:
        def patch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, extra: dict) -> torch.Tensor:
            calls.append((key, token_map_size(extra["original_shape"], q.shape[1])))
            return v

        return patch

    options = {"patches_replace": {"attn1": {key: recorder(key) for key in keys}}}
    latent = torch.zeros(1, 4, 9, 13)
    with torch.no_grad():
        unet(
            latent, torch.tensor([10.0]), context=torch.zeros(1, 3, 16), transformer_options=options
        )
    assert [key for key, _ in calls] == keys
    maps = dict(calls)
    assert maps[("input", 1, 0)] == (9, 13)
    assert maps[("input", 4, 0)] == (5, 7)
    assert maps[("middle", 0, 0)] == (2, 2)
    assert maps[("output", 11, 0)] == (9, 13)


def test_block_range_selects_paper_layers() -> None:
    assert select_blocks(SD15_PAPER_ORDER, 3, 11) == SD15_PAPER_ORDER[3:11]
    assert select_blocks(SD15_PAPER_ORDER, 0, 16) == SD15_PAPER_ORDER


@pytest.mark.parametrize(("start", "end"), [(5, 5), (8, 3), (-1, 4), (3, 17)])
def test_bad_block_range_lists_valid_layers_and_paper_default(start: int, end: int) -> None:
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.15.*start=3, end=11"):
        select_blocks(SD15_PAPER_ORDER, start, end)


def test_model_without_unet_blocks_is_refused() -> None:
    with pytest.raises(TypeError, match="no UNet"):
        transformer_block_keys(torch.nn.Linear(2, 2))


def test_unet_is_found_inside_model_wrappers() -> None:
    class Holder:
        def __init__(self, inner: Any) -> None:
            self.diffusion_model = inner

    class Patcher:
        def __init__(self, inner: Any) -> None:
            self.model = Holder(inner)

    unet = _unet(_sd15_config())
    assert transformer_block_keys(Patcher(unet)) == SD15_PAPER_ORDER


def test_levels_follow_the_unets_own_downsamples() -> None:
    sd15 = transformer_block_levels(_unet(_sd15_config()))
    assert [sd15[key] for key in SD15_PAPER_ORDER] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        2,
        2,
        2,
        1,
        1,
        1,
        0,
        0,
        0,
    ]
    sdxl = _unet(_sdxl_config())
    levels = transformer_block_levels(sdxl)
    by_block = {key[:2]: level for key, level in levels.items()}
    assert by_block == {
        ("input", 4): 1,
        ("input", 5): 1,
        ("input", 7): 2,
        ("input", 8): 2,
        ("middle", 0): 2,
        ("output", 0): 2,
        ("output", 1): 2,
        ("output", 2): 2,
        ("output", 3): 1,
        ("output", 4): 1,
        ("output", 5): 1,
    }


def test_paper_range_is_the_papers_on_sd15_and_its_analogue_on_sdxl() -> None:
    assert paper_layer_range(_unet(_sd15_config())) == (3, 11)
    sdxl = _unet(_sdxl_config())
    start, end = paper_layer_range(sdxl)
    assert (start, end) == (2, 66)
    chosen = transformer_block_keys(sdxl)[start:end]
    assert {key[:2] for key in chosen} == {
        ("input", 5),
        ("input", 7),
        ("input", 8),
        ("middle", 0),
        ("output", 0),
        ("output", 1),
        ("output", 2),
        ("output", 3),
    }
    assert (
        describe_blocks(sdxl, chosen[:4])
        == "input 5 (layers 2-3, latent/2), input 7 (layers 4-5, latent/4)"
    )


def test_non_unet_models_are_named_in_the_refusal() -> None:
    class Flux(torch.nn.Module):
        pass

    class Holder:
        diffusion_model = Flux()

    with pytest.raises(
        TypeError, match=r"Holder \(diffusion model Flux\).*Supported: .*SDXL.*Flux"
    ):
        transformer_block_keys(Holder())
