"""The training node's declaration and its refusals, against ComfyUI's own model classes."""

from __future__ import annotations

import pytest
from comfyui_analogist.analogist_reversion.comfy_parts import ModelKindError, check_sd1
from comfyui_analogist.nodes import reversion as node


def test_every_input_has_a_tooltip_and_the_node_is_documented():
    spec = node.AnalogistReVersionLearn.INPUT_TYPES()
    for group in ("required", "optional"):
        for name, (_kind, *options) in spec[group].items():
            assert options and options[0].get("tooltip"), name
    cls = node.AnalogistReVersionLearn
    assert cls.CATEGORY.startswith("Analogist/") and len(cls.DESCRIPTION) > 100
    assert (
        node.NODE_DISPLAY_NAME_MAPPINGS["AnalogistReVersionLearn"]
        == "Analogist ReVersion: learn relation"
    )
    from pathlib import Path

    help_page = (
        Path(node.__file__).resolve().parents[1] / "web" / "docs" / "AnalogistReVersionLearn.md"
    )
    assert help_page.is_file()


def test_paper_defaults_are_the_node_defaults():
    optional = node.AnalogistReVersionLearn.INPUT_TYPES()["optional"]
    required = node.AnalogistReVersionLearn.INPUT_TYPES()["required"]
    assert required["steps"][1]["default"] == 3000
    names = ("batch_size", "gradient_accumulation", "learning_rate", "weight_decay")
    names += ("steer_weight", "num_positives", "seed")
    got = {k: optional[k][1]["default"] for k in names}
    assert got == {
        "batch_size": 2,
        "gradient_accumulation": 4,
        "learning_rate": 2.5e-4,
        "weight_decay": 1e-2,
        "steer_weight": 0.01,
        "num_positives": 4,
        "seed": 2023,
    }


def test_sdxl_is_refused_by_name():
    from support.sdxl import tiny_sdxl_inpaint_model_patcher

    with pytest.raises(ModelKindError, match="needs an SD1.5 model; this MODEL is SDXL"):
        check_sd1(tiny_sdxl_inpaint_model_patcher(), None)


def test_flux_is_refused_by_name():
    from support.flux import host_has_flux, tiny_flux_fill_patcher

    if not host_has_flux():
        pytest.skip("this host (ComfyUI 0.0.1) has no Flux model class to refuse")
    with pytest.raises(ModelKindError, match="needs an SD1.5 model; this MODEL is Flux"):
        check_sd1(tiny_flux_fill_patcher(), None)


def test_an_inpainting_sd15_is_refused():
    from support.sd15 import tiny_inpaint_model_patcher

    class Clip:  # stands in only for the attribute check; the refusal is about the UNet
        cond_stage_model = type("SD1", (), {"clip_l": object()})()

    with pytest.raises(ModelKindError, match="9 input channels"):
        check_sd1(tiny_inpaint_model_patcher(), Clip())


def test_a_folder_outside_the_input_folder_is_refused(tmp_path):
    with pytest.raises(node.ReVersionInputError, match="outside ComfyUI's input folder"):
        node.exemplar_folder("../../etc")
    with pytest.raises(node.ReVersionInputError, match="outside ComfyUI's input folder"):
        node.exemplar_folder(str(tmp_path))


def test_images_and_folder_together_or_neither_are_refused():
    import torch

    learn = node.AnalogistReVersionLearn._exemplars
    with pytest.raises(node.ReVersionInputError, match="not both"):
        learn(torch.rand(1, 8, 8, 3), "x", "cat {} stone", 64)
    with pytest.raises(node.ReVersionInputError, match="no exemplars"):
        learn(None, "", "cat {} stone", 64)


def test_training_is_refused_exactly_where_the_host_cannot_backpropagate():
    """ComfyUI 0.0.1's transformer blocks add in place; 0.30.0's do not. The probe runs one
    of the host's own blocks forward and backward; the refusal names the fix."""
    import inspect

    import comfy.ldm.modules.attention as attention
    from comfyui_analogist.analogist_reversion.comfy_parts import (
        HostError,
        check_host,
        host_backprop_problem,
    )

    in_place = "x += n" in inspect.getsource(attention.BasicTransformerBlock.forward)
    assert (host_backprop_problem() is not None) == in_place
    if in_place:
        with pytest.raises(HostError, match="Update ComfyUI"):
            check_host()
    else:
        check_host()
