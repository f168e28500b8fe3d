"""The demo's image handling: golden PNGs bit-exact, the blur against OpenCV, the crop box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_mimicbrush import images, pipeline
from support import mimicbrush as smb

P = smb.load_png


@pytest.fixture(scope="module")
def padded():
    target, pad = images.pad_to_square(P("inputs/target.png"), 255)
    reference, _ = images.pad_to_square(P("inputs/reference.png"), 255)
    mask, _ = images.pad_to_square(images.binarize_mask(P("inputs/mask.png")), 0)
    return {"target": target, "reference": reference, "mask": mask, "pad": pad}


def test_padding_and_collage_are_exact(padded):
    assert np.array_equal(padded["target"], P("intermediates/target_padded.png"))
    assert np.array_equal(padded["reference"], P("intermediates/reference_padded.png"))
    assert np.array_equal(padded["mask"], P("intermediates/mask_padded.png"))
    collage = images.collage(padded["target"], padded["mask"])
    assert np.array_equal(collage, P("intermediates/target_collage.png"))


def test_512_inputs_mask_latent_and_clip_input_are_exact(padded, trace):
    collage = images.collage(padded["target"], padded["mask"])
    assert np.array_equal(images.lanczos(collage), P("intermediates/collage_512.png"))
    assert np.array_equal(images.lanczos(padded["reference"]), P("intermediates/reference_512.png"))
    mask01 = images.mask_512(padded["mask"])
    assert np.array_equal(mask01 * 255, P("intermediates/mask_512.png"))
    assert torch.equal(images.mask_latent(mask01), trace["mask_latent"])
    assert np.array_equal(
        images.clip_input_u8(padded["reference"], 224), P("intermediates/clip_input_224.png")
    )


def test_depth_input_is_within_one_level_of_opencv(padded):
    ours = images.depth_input_u8(padded["target"], 518).astype(int)
    golden = P("intermediates/depth_input_518.png").astype(int)
    assert np.abs(ours - golden).max() <= 1


def test_alpha_and_composite_are_exact():
    alpha = images.blur_alpha(images.binarize_mask(P("inputs/mask.png")))
    assert np.array_equal(alpha, P("outputs/alpha.png"))
    result = images.composite(
        P("outputs/synthesis_uncomposited.png"), P("inputs/target.png"), alpha
    )
    assert np.array_equal(result, P("outputs/result.png"))


@pytest.mark.parametrize("seed", range(3))
def test_integer_blur_equals_opencv_gaussian_on_random_masks(seed):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(seed)
    mask = (rng.random((37, 53)) > 0.6).astype(np.uint8) * 255
    expected = mask
    for _ in range(images.ALPHA_BLUR_PASSES):
        expected = cv2.GaussianBlur(expected, (3, 3), 0)
    assert np.array_equal(images.blur_alpha(mask), expected)


def test_crop_box_holds_the_mask_and_stays_inside():
    masked = np.zeros((900, 1400), bool)
    masked[100:160, 1300:1390] = True
    box = images.crop_box(masked, margin=0.25)
    assert box.height >= 512 and box.width >= 512
    assert 0 <= box.top and box.top + box.height <= 900
    assert 0 <= box.left and box.left + box.width <= 1400
    assert box.cut(masked).sum() == masked.sum()
    small = np.zeros((300, 400), bool)
    small[10:20, 10:20] = True
    assert images.crop_box(small, 0.25) == images.CropBox(0, 0, 300, 400)


def test_paste_with_a_crop_changes_only_the_crop():
    target = torch.rand(1, 700, 900, 3)
    mask = torch.zeros(1, 700, 900)
    mask[:, 600:650, 50:120] = 1
    decoded = torch.rand(2, 512, 512, 3)
    out = pipeline.paste(decoded, target, mask, crop_margin=0.25)
    assert out.shape == (2, 700, 900, 3)
    box = images.crop_box(images.mask_to_u8(mask[0]) > 128, 0.25)
    outside = np.ones((700, 900), bool)
    outside[box.top : box.top + box.height, box.left : box.left + box.width] = False
    original = images.image_to_u8(target[0])
    for row in out:
        assert np.array_equal(images.image_to_u8(row)[outside], original[outside])
        assert not np.array_equal(images.image_to_u8(row), original)
