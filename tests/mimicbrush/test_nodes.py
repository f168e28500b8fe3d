"""The MimicBrush nodes in-process on the real host: files from model folders, batches,
several samples per target, ComfyUI's own sampler, decode and paste."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_mimicbrush import images
from comfyui_analogist.nodes import mimicbrush as nodes
from support import mimicbrush as smb

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def model_folders(official_files, tmp_path, monkeypatch):
    fp = nodes.register_model_folders()
    mb, depth = tmp_path / "mimicbrush", tmp_path / "depth_anything"
    mb.mkdir()
    depth.mkdir()
    (mb / "mimicbrush.bin").symlink_to(official_files["mimicbrush"])
    (depth / "depth_anything_vitb14.pth").symlink_to(official_files["depth"])
    # 0.30.0 keeps a dict of (paths, extensions); 0.0.1 a FolderNames of dataclasses.
    store = getattr(fp.folder_names_and_paths, "contents", fp.folder_names_and_paths)
    for name, folder in (("mimicbrush", mb), ("depth_anything", depth)):
        old = store[name]
        new = (
            dataclasses.replace(old, paths=[str(folder)])
            if dataclasses.is_dataclass(old)
            else ([str(folder)], set())
        )
        monkeypatch.setitem(store, name, new)
    if hasattr(fp, "filename_list_cache"):
        monkeypatch.setattr(fp, "filename_list_cache", {})
    return fp


def test_loader_lists_and_loads_the_official_files_from_model_folders(model_folders):
    inputs = nodes.AnalogistMimicBrushLoader.INPUT_TYPES()["required"]
    assert inputs["mimicbrush"][0] == ["mimicbrush.bin"]
    assert inputs["depth_model"][0] == ["depth_anything/depth_anything_vitb14.pth"]
    model, mimicbrush = nodes.AnalogistMimicBrushLoader().load(
        "mimicbrush.bin", "depth_anything/depth_anything_vitb14.pth"
    )
    assert model.model.diffusion_model.input_blocks[0][0].in_channels == 13
    assert mimicbrush.reference is not model


def test_loader_refuses_paths_outside_its_folders(model_folders):
    with pytest.raises(
        ValueError, match="depth_model: '../secret.pth' is not one of the listed files"
    ):
        nodes.AnalogistMimicBrushLoader().load("mimicbrush.bin", "../secret.pth")
    with pytest.raises(
        ValueError, match="mimicbrush: 'missing.bin' is not in ComfyUI's models/mimicbrush"
    ):
        nodes.AnalogistMimicBrushLoader().load(
            "missing.bin", "depth_anything/depth_anything_vitb14.pth"
        )


def _targets():
    base = smb.image_tensor("inputs/target.png")
    mask = smb.image_tensor("inputs/mask.png")
    return torch.cat([base, base.flip(2)]), torch.cat([mask, mask.flip(2)])


def test_two_targets_two_samples_each_sample_decode_and_paste(models, vae):
    import comfy.sample

    target, mask = _targets()
    reference = smb.image_tensor("inputs/reference.png")
    model, positive, negative, latent, noise, _crop = nodes.AnalogistMimicBrushApply().apply(
        models.imitative, models, vae, target, mask, reference, True, 2, 3
    )
    assert latent["samples"].shape == (4, 4, 64, 64)
    assert positive[0][0].shape[0] == 4 and positive[0][1]["mimicbrush_concat"].shape == (
        4,
        9,
        64,
        64,
    )
    noise_tensor = noise.generate_noise(latent)
    samples = comfy.sample.sample(
        model,
        noise_tensor,
        1,
        5.0,
        "ddim",
        "ddim_uniform",
        positive,
        negative,
        latent["samples"],
        seed=0,
    )
    decoded = vae.decode(samples)
    assert decoded.shape == (4, 512, 512, 3)
    (pasted,) = nodes.AnalogistMimicBrushPaste().paste(decoded, target, mask)
    assert pasted.shape == (4, 240, 320, 3)
    for j in range(4):
        b = j // 2
        alpha = images.blur_alpha(images.binarize_mask(images.mask_to_u8(mask[b])))
        keep = alpha == 0
        assert keep.any()
        ours = images.image_to_u8(pasted[j])
        assert np.array_equal(ours[keep], images.image_to_u8(target[b])[keep])
    # The two samples of one target start from different noise, so they differ.
    assert not torch.equal(pasted[0], pasted[1])


def test_noise_refuses_a_latent_of_another_shape(models, vae):
    target, mask = _targets()
    *_, noise, _crop = nodes.AnalogistMimicBrushApply().apply(
        models.imitative,
        models,
        vae,
        target[:1],
        mask[:1],
        smb.image_tensor("inputs/reference.png"),
        False,
        1,
        0,
    )
    with pytest.raises(ValueError, match="sample the latent MimicBrush Apply returned"):
        noise.generate_noise({"samples": torch.zeros(2, 4, 64, 64)})


@pytest.mark.parametrize("node_id", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_every_node_is_documented(node_id):
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    assert node_id.startswith("Analogist") and cls.CATEGORY.startswith("Analogist/")
    assert cls.DESCRIPTION and node_id in nodes.NODE_DISPLAY_NAME_MAPPINGS
    for name, spec in cls.INPUT_TYPES()["required"].items():
        assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert (ROOT / "web" / "docs" / f"{node_id}.md").is_file()


@pytest.mark.parametrize("node_id", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_every_node_is_found_by_what_artists_search_for(node_id):
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    assert "mimicbrush" in cls.SEARCH_ALIASES and "reference inpaint" in cls.SEARCH_ALIASES
    assert len(nodes.NODE_DISPLAY_NAME_MAPPINGS[node_id]) <= 28
    assert all(isinstance(a, str) and a == a.lower() for a in cls.SEARCH_ALIASES)
