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


# --------------------------------------------------------------------------- bad input (issue 23)


@pytest.fixture
def input_dir(tmp_path):
    """ComfyUI's input folder set to a fresh folder for the test (the host's own setter)."""
    paths = node.folder_paths()
    before = paths.get_input_directory()
    folder = tmp_path / "input"
    folder.mkdir()
    paths.set_input_directory(str(folder))
    yield folder
    paths.set_input_directory(before)


def learn(**changes):
    inputs = dict(
        model=None, clip=None, vae=None, name="painted_on", captions="cat {} stone", steps=10
    )
    inputs.update(changes)
    return node.AnalogistReVersionLearn().learn(**inputs)


@pytest.mark.parametrize(
    "images, says",
    [
        ("nan", "NaN or infinite"),
        ("0..255", "looks like a 0..255 image"),
        ("-1..1", "looks like a -1..1 image"),
        ("empty", "is empty"),
        ("latent", "has 8 channels"),
    ],
)
def test_a_broken_image_batch_is_refused_naming_images_before_training(images, says):
    import torch

    batch = {
        "nan": torch.full((2, 16, 16, 3), float("nan")),
        "0..255": torch.rand(2, 16, 16, 3) * 255.0,
        "-1..1": torch.rand(2, 16, 16, 3) * 2.0 - 1.0,
        "empty": torch.zeros(0, 16, 16, 3),
        "latent": torch.rand(2, 16, 16, 8),
    }[images]
    with pytest.raises(node.ReVersionInputError, match=says) as info:
        learn(images=batch)
    assert str(info.value).startswith("images ")


def test_an_empty_or_missing_folder_under_input_is_refused_with_what_to_put_there(input_dir):
    (input_dir / "empty").mkdir()
    with pytest.raises(node.ReVersionInputError, match="holds no images") as info:
        learn(folder="empty")
    assert "text.json" in str(info.value)
    with pytest.raises(node.ReVersionInputError, match="is not a folder inside") as info:
        learn(folder="missing")
    assert str(input_dir / "missing") in str(info.value)
    (input_dir / "a_file").write_text("x")
    with pytest.raises(node.ReVersionInputError, match="is not a folder inside"):
        learn(folder="a_file")


@pytest.mark.parametrize("folder", ["..", "../elsewhere", "/etc", ".", "sub/../..", "link_out"])
def test_a_folder_escaping_the_input_folder_is_refused(input_dir, tmp_path, folder):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (input_dir / "sub").mkdir()
    (input_dir / "link_out").symlink_to(outside, target_is_directory=True)
    with pytest.raises(node.ReVersionInputError, match="input folder") as info:
        learn(folder=folder)
    message = str(info.value)
    assert message.startswith("folder: ") and "relative to it" in message


@pytest.mark.parametrize("name", ["a/b", "..", "../../models/checkpoints/x", "a\\b", "/tmp/x", ""])
def test_an_embedding_name_with_path_separators_is_refused(input_dir, name):
    import torch

    with pytest.raises(node.ReVersionInputError, match="not usable as an embedding name"):
        learn(name=name, images=torch.rand(2, 16, 16, 3))


def test_exemplar_files_the_trainer_would_read_wrong_are_refused(input_dir):
    import json

    import numpy as np
    from PIL import Image

    folder = input_dir / "relation"
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(folder / "one.png")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(folder / "two.png")  # 16-bit
    (folder / "text.json").write_text(
        json.dumps({"one.png": ["cat {} stone"], "two.png": ["a {} b"]})
    )
    with pytest.raises(node.ReVersionInputError, match="16-bit") as info:
        learn(folder="relation")
    assert "two.png" in str(info.value) and "8-bit" in str(info.value)
    (folder / "two.png").write_bytes(b"not an image")
    with pytest.raises(node.ReVersionInputError, match="cannot be read as an image"):
        learn(folder="relation")


def test_an_exif_rotated_exemplar_is_trained_upright(input_dir):
    import json

    from comfyui_analogist.analogist_reversion.data import exemplars_from_folder
    from PIL import Image

    folder = input_dir / "rotated"
    folder.mkdir()
    upright = Image.new("RGB", (20, 40), (250, 250, 250))
    upright.paste((10, 10, 10), (0, 0, 20, 10))  # dark band at the top
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: a viewer turns it back upright
    upright.rotate(90, expand=True).save(folder / "r.png", exif=exif.tobytes())
    (folder / "text.json").write_text(json.dumps({"r.png": ["cat {} stone"]}))
    node.check_exemplar_files(folder)
    (exemplar,) = exemplars_from_folder(folder, 64)
    rows = exemplar.pixels.mean(dim=(0, 2)).numpy()  # [-1, 1] per row
    assert rows[:8].mean() < -0.5 and rows[-16:].mean() > 0.5, rows
