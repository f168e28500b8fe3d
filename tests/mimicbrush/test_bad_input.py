"""Wrong files and wrong images stop with a message naming the input and the fix."""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_mimicbrush import checkpoint, pipeline
from support import mimicbrush as smb


def test_a_stable_diffusion_checkpoint_is_named_as_such(tmp_path):
    import safetensors.torch

    path = tmp_path / "v1-5-pruned.safetensors"
    safetensors.torch.save_file(
        {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4)}, str(path)
    )
    with pytest.raises(
        checkpoint.MimicBrushFileError, match="Stable Diffusion checkpoint.*models/checkpoints"
    ):
        checkpoint.load_mimicbrush_bin(str(path))
    pickled = tmp_path / "sd.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}}, pickled)
    with pytest.raises(
        checkpoint.MimicBrushFileError, match="not MimicBrush's mimicbrush.bin.*'unet'"
    ):
        checkpoint.load_mimicbrush_bin(str(pickled))


def test_a_truncated_file_says_download_again(official_files, tmp_path):
    data = official_files["mimicbrush"].read_bytes()
    cut = tmp_path / "mimicbrush.bin"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        checkpoint.MimicBrushFileError, match=r"mimicbrush.bin could not be read.*truncated"
    ):
        checkpoint.load_mimicbrush_bin(str(cut))


def test_a_missing_part_and_a_missing_weight_are_named(tmp_path):
    parts = smb.mimicbrush_parts()
    path = tmp_path / "mimicbrush.bin"
    torch.save({k: v for k, v in parts.items() if k != "depth_guider"}, path)
    with pytest.raises(checkpoint.MimicBrushFileError, match=r"has no \['depth_guider'\]"):
        checkpoint.load_mimicbrush_bin(str(path))
    unet = dict(parts["unet"])
    del unet["up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"]
    torch.save({**parts, "unet": unet}, path)
    loaded = checkpoint.load_mimicbrush_bin(str(path))
    from comfyui_analogist.analogist_mimicbrush.unet import imitative_and_reference_patchers

    with pytest.raises(
        checkpoint.MimicBrushFileError, match=r"\['unet'\] is missing 1 weights.*attn1.to_k"
    ):
        imitative_and_reference_patchers(loaded, "mimicbrush.bin", heads=smb.unet_heads())


def test_the_depth_model_slot_refuses_mimicbrush_bin(official_files):
    with pytest.raises(
        checkpoint.MimicBrushFileError, match="is mimicbrush.bin, not the depth model"
    ):
        checkpoint.load_depth_anything(str(official_files["mimicbrush"]))


def test_an_empty_or_full_mask_is_refused():
    target = torch.rand(1, 40, 60, 3)
    with pytest.raises(ValueError, match="mask is empty.*paint the region"):
        pipeline.check_inputs(target, torch.zeros(1, 40, 60), target)
    with pytest.raises(ValueError, match="mask covers the whole target"):
        pipeline.check_inputs(target, torch.ones(1, 40, 60), target)
    # 0.5 is not above the demo's threshold (128 of 255): still empty.
    with pytest.raises(ValueError, match="mask is empty"):
        pipeline.check_inputs(target, torch.full((1, 40, 60), 0.5), target)


def test_a_mask_of_another_size_is_refused():
    target = torch.rand(1, 40, 60, 3)
    mask = torch.zeros(1, 60, 40)
    mask[:, 10:20, 10:20] = 1
    with pytest.raises(ValueError, match="mask is 40x60 but target is 60x40"):
        pipeline.check_inputs(target, mask, target)


@pytest.mark.parametrize("reference", [torch.rand(1, 40, 60), torch.rand(40, 60, 3), "a path"])
def test_a_reference_that_is_not_an_image_is_refused(reference):
    target = torch.rand(1, 40, 60, 3)
    mask = torch.zeros(1, 40, 60)
    mask[:, 10:20, 10:20] = 1
    with pytest.raises(ValueError, match="reference is not an IMAGE"):
        pipeline.check_inputs(target, mask, reference)


def test_reference_count_must_fit_the_targets():
    target = torch.rand(3, 40, 60, 3)
    mask = torch.zeros(1, 40, 60)
    mask[:, 10:20, 10:20] = 1
    with pytest.raises(ValueError, match="reference has 2 images for 3 targets"):
        pipeline.check_inputs(target, mask, torch.rand(2, 30, 30, 3))
