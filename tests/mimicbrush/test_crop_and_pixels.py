"""MimicBrush Paste takes Apply's crop (so a mismatched crop, target or mask is refused, not
pasted in the wrong place), and broken pixels or masks are refused naming the input."""

from __future__ import annotations

import pytest
import torch
from comfyui_analogist.analogist_mimicbrush import images, pipeline
from comfyui_analogist.nodes import mimicbrush as nodes
from support import mimicbrush as smb


def _large_target():
    gen = torch.Generator().manual_seed(4)
    target = torch.rand(1, 700, 900, 3, generator=gen)
    mask = torch.zeros(1, 700, 900)
    mask[:, 600:650, 50:120] = 1
    return target, mask


@pytest.fixture(scope="module")
def cropped_apply(models, vae):
    target, mask = _large_target()
    outputs = nodes.AnalogistMimicBrushApply().apply(
        models.imitative,
        models,
        vae,
        target,
        mask,
        smb.image_tensor("inputs/reference.png"),
        False,
        2,
        0,
        crop_around_mask=True,
        crop_margin=0.5,
    )
    return target, mask, outputs


def test_apply_returns_its_crop_last(cropped_apply):
    target, mask, outputs = cropped_apply
    assert nodes.AnalogistMimicBrushApply.RETURN_TYPES[-1] == "MIMICBRUSH_CROP"
    assert nodes.AnalogistMimicBrushApply.RETURN_NAMES[:5] == (
        "model",
        "positive",
        "negative",
        "latent",
        "noise",
    )
    crop = outputs[-1]
    assert isinstance(crop, pipeline.CropGeometry)
    assert crop.crop_margin == 0.5 and crop.target_size == (700, 900)
    assert crop.samples_per_target == 2
    assert crop.boxes == (images.crop_box(images.mask_to_u8(mask[0]) > 128, 0.5),)
    with pytest.raises(AttributeError):
        crop.crop_margin = 0.25  # frozen: a crop cannot be edited between the nodes


def test_paste_with_the_crop_connected_puts_the_result_where_apply_cut_it(cropped_apply):
    target, mask, outputs = cropped_apply
    crop = outputs[-1]
    decoded = torch.rand(2, 512, 512, 3, generator=torch.Generator().manual_seed(1))
    paste = nodes.AnalogistMimicBrushPaste().paste
    # Widgets left at their defaults (off): the crop decides.
    (with_crop,) = paste(decoded, target, mask, crop=crop)
    (by_hand,) = paste(decoded, target, mask, crop_around_mask=True, crop_margin=0.5)
    assert torch.equal(with_crop, by_hand)
    # Without the crop and with the widgets forgotten, the old behaviour pastes elsewhere.
    (forgotten,) = paste(decoded, target, mask)
    assert not torch.equal(with_crop, forgotten)
    # Widgets that agree are accepted.
    (agreeing,) = paste(decoded, target, mask, crop_around_mask=True, crop_margin=0.5, crop=crop)
    assert torch.equal(with_crop, agreeing)


def test_paste_refuses_widgets_that_contradict_the_crop(cropped_apply):
    target, mask, outputs = cropped_apply
    decoded = torch.rand(2, 512, 512, 3)
    paste = nodes.AnalogistMimicBrushPaste().paste
    with pytest.raises(
        ValueError,
        match=r"crop_margin 0.25 here, but the connected crop says MimicBrush Apply ran with "
        r"crop_around_mask on, crop_margin 0.5.*Turn crop_around_mask off",
    ):
        paste(decoded, target, mask, crop_around_mask=True, crop_margin=0.25, crop=outputs[-1])


def test_paste_refuses_a_target_mask_or_rows_other_than_applys(cropped_apply):
    target, mask, outputs = cropped_apply
    crop = outputs[-1]
    paste = nodes.AnalogistMimicBrushPaste().paste
    decoded = torch.rand(2, 512, 512, 3)
    moved = torch.zeros_like(mask)
    moved[:, 100:150, 500:570] = 1
    with pytest.raises(ValueError, match="mask is not the mask MimicBrush Apply was given"):
        paste(decoded, target, moved, crop=crop)
    other = torch.rand(1, 600, 900, 3)
    with pytest.raises(ValueError, match="target is 1 image.*of 900x600 but MimicBrush Apply"):
        paste(decoded, other, moved[:, :600], crop=crop)
    with pytest.raises(ValueError, match="images has 4 rows but MimicBrush Apply made 2 sample"):
        paste(torch.rand(4, 512, 512, 3), target, mask, crop=crop)
    with pytest.raises(ValueError, match="crop: connect the crop output of MimicBrush Apply"):
        paste(decoded, target, mask, crop_around_mask=True, crop="not a crop")


def test_paste_without_the_crop_keeps_the_old_widgets():
    """Saved workflows have no crop link: the widgets alone decide, as before."""
    target, mask = _large_target()
    decoded = torch.rand(1, 512, 512, 3)
    (pasted,) = nodes.AnalogistMimicBrushPaste().paste(
        decoded, target, mask, crop_around_mask=True, crop_margin=0.5
    )
    assert torch.equal(pasted, pipeline.paste(decoded, target, mask, 0.5))
    optional = nodes.AnalogistMimicBrushPaste.INPUT_TYPES()["optional"]
    assert list(optional) == ["crop_around_mask", "crop_margin", "crop"]
    assert optional["crop"][0] == "MIMICBRUSH_CROP"


def _mask(h=40, w=60):
    mask = torch.zeros(1, h, w)
    mask[:, 10:20, 10:20] = 1
    return mask


def _bad(kind: str) -> torch.Tensor:
    image = torch.rand(1, 40, 60, 3)
    if kind == "nan":
        image[0, 3, 4, 1] = float("nan")
    elif kind == "0..255":
        image = image * 255
    elif kind == "-1..1":
        image = image * 2 - 1
    return image


@pytest.mark.parametrize("which", ["target", "reference"])
@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("nan", "1 of 7200 values that are NaN or infinite"),
        ("0..255", "looks like a 0..255 image.*divide it by 255"),
        ("-1..1", r"looks like a -1..1 image.*\(x \+ 1\) / 2"),
    ],
)
def test_broken_pixels_are_refused_naming_the_input(which, kind, message):
    good = torch.rand(1, 40, 60, 3)
    args = {"target": good, "reference": good, which: _bad(kind)}
    with pytest.raises(ValueError, match=f"^{which} has .*{message}"):
        pipeline.check_inputs(args["target"], _mask(), args["reference"])


def test_paste_refuses_broken_decoded_pixels():
    target = torch.rand(1, 40, 60, 3)
    with pytest.raises(ValueError, match="^images has 1 of"):
        nodes.AnalogistMimicBrushPaste().paste(_bad("nan")[:, :, :, :], target, _mask())


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (_mask() * 255, r"mask has values from 0 to 255.*0..255 mask: divide it by 255"),
        (_mask() - 0.5, r"mask has values from -0.5 to 0.5.*normalise it to 0..1"),
        (_mask().masked_fill(_mask() > 0, float("nan")), "mask has 100 values that are NaN"),
        (torch.rand(1, 1, 40, 60), r"mask is not a MASK.*got \(1, 1, 40, 60\)"),
        ((_mask() > 0).to(torch.uint8), "mask: expected float values in 0..1"),
        ("mask.png", "mask is not a MASK.*got str"),
    ],
)
def test_a_mask_of_the_wrong_shape_or_range_is_refused(mask, message):
    target = torch.rand(1, 40, 60, 3)
    with pytest.raises(ValueError, match=message):
        pipeline.check_inputs(target, mask, target)
