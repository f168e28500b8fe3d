"""``python -m analogist mimicbrush`` end to end on its own embedded ComfyUI, and its checks.

The model files are the goldens' tiny random weights in the official format
(``mimicbrush.bin``, ``depth_anything_vitb14.pth``) and a random full-size SD VAE under
sd-vae-ft-mse's file name; 1 DDIM step. The mask is a separate file (white = repaint).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import mimicbrush as smb
from support import runner

pytestmark = pytest.mark.host


analogist = partial(runner.analogist, "mimicbrush", timeout=900)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mimicbrush-runner")
    official = smb.write_official_files(folder / "models")
    Image.fromarray(smb.load_png("inputs/target.png")).save(folder / "target.png")
    Image.fromarray(smb.load_png("inputs/mask.png")).save(folder / "mask.png")
    Image.fromarray(smb.load_png("inputs/reference.png")).save(folder / "reference.jpg")
    return {
        "target": folder / "target.png",
        "mask": folder / "mask.png",
        "reference": folder / "reference.jpg",
        "models": [
            "--mimicbrush",
            official["mimicbrush"],
            "--depth-model",
            official["depth"],
            "--vae",
            smb.cached_sd_vae(),
        ],
    }


def inputs(files) -> list:
    return ["--target", files["target"], "--mask", files["mask"], "--reference", files["reference"]]


def test_mimicbrush_command_starts_its_own_comfyui_and_saves_the_edited_target(files, tmp_path):
    out = tmp_path / "out"
    done = analogist(
        *inputs(files), *files["models"], "--shape-control", "--steps", 1, "--out", out
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (path,) = [Path(line) for line in done.stdout.splitlines() if line.strip()]
    assert path == out / "target_mimicbrush.png" and path.is_file()
    assert "starting ComfyUI" in done.stderr and "1/1" in done.stderr and "ok" in done.stderr
    result = np.asarray(Image.open(path).convert("RGB")).astype(int)
    target = smb.load_png("inputs/target.png").astype(int)
    from comfyui_analogist.analogist_mimicbrush import images

    keep = images.blur_alpha(images.binarize_mask(smb.load_png("inputs/mask.png"))) == 0
    assert result.shape == target.shape
    assert np.abs(result[keep] - target[keep]).max() <= 1  # Save Image truncates 255 * x
    assert np.abs(result[~keep] - target[~keep]).max() > 10


def test_a_mask_of_another_size_is_refused_before_anything_starts(files, tmp_path):
    small = tmp_path / "small_mask.png"
    Image.open(files["mask"]).resize((100, 50)).save(small)
    args = ["--target", files["target"], "--mask", small, "--reference", files["reference"]]
    done = analogist(*args, *files["models"], "--out", tmp_path / "out", timeout=120)
    assert done.returncode == 2
    assert "--mask: small_mask.png is 100x50 px but the target is 320x240 px" in done.stderr
    assert "starting ComfyUI" not in done.stderr and not (tmp_path / "out").exists()


def test_a_missing_model_file_says_what_to_download_and_where(files, tmp_path):
    models = list(files["models"])
    models[models.index("--depth-model") + 1] = tmp_path / "nowhere.pth"
    done = analogist(*inputs(files), *models, "--out", tmp_path / "out", timeout=120)
    assert done.returncode == 2
    assert "--depth-model: file not found" in done.stderr
    assert (
        "Depth Anything V1 ViT-B/14" in done.stderr and "depth_anything_vitb14.pth" in done.stderr
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--cfg", "nan"], "--cfg must be a number, got nan"),
        (["--crop-around-mask", "11"], "--crop-around-mask: the margin is a fraction"),
        (["--server", "ftp://example"], "--server"),
    ],
)
def test_bad_options_are_refused_naming_the_option(files, tmp_path, args, says):
    done = analogist(*inputs(files), *files["models"], *args, "--out", tmp_path, timeout=120)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_the_prompt_carries_the_options_and_the_mask_file(files):
    """The graph the runner queues: the shipped texture workflow, the user's options on its
    own widgets, the mask through Load Image (as Mask) into Apply and Paste."""
    import argparse

    from comfyui_analogist.analogist_cli import mimicbrush as cli
    from support.workflows import workflow_builder

    info = workflow_builder().node_definitions()
    info["LoadImageMask"] = {
        "input": {"required": {"image": [["x"], {}], "channel": [["red"], {}]}},
        "output": ["MASK"],
        "output_name": ["MASK"],
    }
    parser = argparse.ArgumentParser()
    cli.add_mimicbrush_command(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["mimicbrush", *map(str, inputs(files)), *map(str, files["models"]), "--shape-control"]
        + ["--steps", "7", "--seed", "3", "--cfg", "4.5", "--samples", "2"]
        + ["--crop-around-mask", "0.5"]
    )
    settings = cli.check_settings(args)
    assert settings.models["depth_model"] == "depth_anything/depth_anything_vitb14.pth"
    prompt = cli.build_prompt(
        settings, info, {"target": "t.png", "mask": "m.png", "reference": "r.png"}
    )
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    apply = by_type["AnalogistMimicBrushApply"]
    assert apply["shape_control"] is True and apply["seed"] == 3
    assert apply["samples_per_target"] == 2 and apply["crop_around_mask"] is True
    assert apply["crop_margin"] == 0.5
    assert by_type["AnalogistDDIMSigmas"]["steps"] == 7
    assert by_type["SamplerCustom"]["cfg"] == 4.5 and by_type["SamplerCustom"]["noise_seed"] == 3
    assert by_type["LoadImageMask"] == {"image": "m.png", "channel": "red"}
    mask_id = next(k for k, v in prompt.items() if v["class_type"] == "LoadImageMask")
    assert apply["mask"] == by_type["AnalogistMimicBrushPaste"]["mask"] == [mask_id, 0]
    loads = sorted(v["inputs"]["image"] for v in prompt.values() if v["class_type"] == "LoadImage")
    assert loads == ["r.png", "t.png"]
