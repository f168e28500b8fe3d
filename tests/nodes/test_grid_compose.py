"""AnalogistGridCompose: the paper's grid, pixel for pixel, and beyond it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_attn.geometry import Rect
from comfyui_analogist.analogist_pixels.layout import (
    ARRANGEMENT_ALIGNED,
    ARRANGEMENT_DEFAULT,
    ARRANGEMENTS,
    FITS,
    LAYOUT_TYPE,
    GridLayout,
)
from comfyui_analogist.nodes import grid
from PIL import Image
from support.grid_images import image, pattern, pixels

compose = grid.AnalogistGridCompose().compose

A = pattern(300, 200, seed=0)
A_PRIME = pattern(180, 240, seed=1)
B = pattern(256, 320, seed=2)


def paper_grid(
    a: np.ndarray, a_prime: np.ndarray, b: np.ndarray, c: int, p: int = 2
) -> tuple[Image.Image, Image.Image]:
    """An independent re-implementation of the paper's ``make_grid`` and of the
    ``image_pasted`` step in ``analogist.py``: PIL only, default resampling."""
    size = int(c - p * 1.5)
    canvas = Image.new("RGB", (2 * c, 2 * c), (255, 255, 255))
    for array, spot in ((a, (p, p)), (a_prime, (c + p - 1, p)), (b, (p, c + p - 1))):
        canvas.paste(Image.fromarray(array).convert("RGB").resize((size, size)), spot)
    canvas.paste(Image.new("RGB", (size, size), (0, 0, 0)), (c + p - 1, c + p - 1))
    pasted = canvas.copy()
    pasted.paste(canvas.crop((0, c, c, 2 * c)), (c, c))
    return pasted, canvas


def _cut(array: np.ndarray, rect: Rect) -> np.ndarray:
    return array[..., rect.y : rect.bottom, rect.x : rect.right, :]


@pytest.mark.parametrize("cell", [256, 512])
def test_stretch_grid_is_byte_identical_to_the_papers_construction(cell: int) -> None:
    grid_out, blank_out, _, _ = compose(
        image(A), image(A_PRIME), image(B), cell, cell, 2, "stretch"
    )
    pasted, blank = paper_grid(A, A_PRIME, B, cell)
    assert np.array_equal(pixels(blank_out)[0], np.asarray(blank))
    assert np.array_equal(pixels(grid_out)[0], np.asarray(pasted))
    # Exactly k / 255: no rounding step is needed to get the bytes back.
    assert torch.equal(grid_out[0], torch.from_numpy(np.array(pasted)).float() / 255)


def test_pastes_sit_at_the_papers_offsets_with_white_borders() -> None:
    _, blank, _, layout = compose(image(A), image(A_PRIME), image(B), 256, 256, 2, "stretch")
    out = pixels(blank)[0]
    assert layout.pastes == (
        Rect(2, 2, 253, 253),
        Rect(257, 2, 253, 253),
        Rect(2, 257, 253, 253),
        Rect(257, 257, 253, 253),
    )
    inside = np.zeros(out.shape[:2], bool)
    for paste in layout.pastes:
        inside[paste.y : paste.bottom, paste.x : paste.right] = True
    assert (out[~inside] == 255).all()
    for line in (0, 1, 255, 256, 510, 511):
        assert (out[line, :] == 255).all() and (out[:, line] == 255).all()
    # The cells hold the right images: A's top-left corner is dark red, green-free.
    expected_a = np.asarray(Image.fromarray(A).resize((253, 253), Image.Resampling.BICUBIC))
    assert np.array_equal(_cut(out, layout.paste("a")), expected_a)


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_b_prime_is_black_in_grid_blank_and_a_copy_of_b_quadrant_in_grid(arrangement: str) -> None:
    grid_out, blank, _, layout = compose(
        image(A), image(A_PRIME), image(B), 256, 256, 2, "stretch", arrangement
    )
    g, k = pixels(grid_out)[0], pixels(blank)[0]
    assert (_cut(k, layout.paste("b_prime")) == 0).all()
    assert np.array_equal(_cut(g, layout.cell("b_prime")), _cut(g, layout.cell("b")))
    outside = np.ones(g.shape[:2], bool)
    cell = layout.cell("b_prime")
    outside[cell.y : cell.bottom, cell.x : cell.right] = False
    assert np.array_equal(g[outside], k[outside])


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize(("width", "height"), [(256, 256), (320, 192)])
def test_mask_is_exactly_the_b_prime_quadrant(arrangement: str, width: int, height: int) -> None:
    _, _, mask, layout = compose(
        image(A), image(A_PRIME), image(B), width, height, 2, "stretch", arrangement
    )
    assert mask.shape == (1, 2 * height, 2 * width) and mask.dtype == torch.float32
    expected = torch.zeros(2 * height, 2 * width)
    expected[height:, width:] = 1.0  # B' is bottom-right in both arrangements
    assert torch.equal(mask[0], expected)
    assert layout.cell("b_prime") == Rect(width, height, width, height)


def test_aligned_arrangement_swaps_a_prime_and_b() -> None:
    _, paper, _, paper_layout = compose(image(A), image(A_PRIME), image(B), 256, 256, 2, "stretch")
    _, aligned, _, layout = compose(
        image(A), image(A_PRIME), image(B), 256, 256, 2, "stretch", ARRANGEMENT_ALIGNED
    )
    assert layout.arrangement == ARRANGEMENT_ALIGNED
    assert layout.cell("b") == Rect(256, 0, 256, 256)
    assert layout.cell("a_prime") == Rect(0, 256, 256, 256)
    p, q = pixels(paper)[0], pixels(aligned)[0]
    for region in ("a", "a_prime", "b", "b_prime"):
        assert np.array_equal(_cut(q, layout.paste(region)), _cut(p, paper_layout.paste(region)))


def test_letterbox_keeps_the_aspect_ratio_with_white_bands() -> None:
    _, blank, _, layout = compose(image(A), image(A_PRIME), image(A), 256, 256, 2, "letterbox")
    (placement,) = layout.b_placements
    # 300 x 200 into 253 x 253: 253 x 169, centred vertically in B's paste (2, 257).
    assert placement.content == Rect(2, 257 + 42, 253, 169)
    assert placement.source_crop == Rect(0, 0, 300, 200)
    out = pixels(blank)[0]
    paste = layout.paste("b")
    assert (out[paste.y : placement.content.y, paste.x : paste.right] == 255).all()
    assert (out[placement.content.bottom : paste.bottom, paste.x : paste.right] == 255).all()
    expected = np.asarray(Image.fromarray(A).resize((253, 169), Image.Resampling.BICUBIC))
    assert np.array_equal(_cut(out, placement.content), expected)


def test_crop_keeps_the_aspect_ratio_by_cutting_the_centre() -> None:
    _, blank, _, layout = compose(image(A), image(A_PRIME), image(A), 256, 256, 2, "crop")
    (placement,) = layout.b_placements
    assert placement.source_crop == Rect(50, 0, 200, 200)
    assert placement.content == layout.paste("b")
    expected = np.asarray(
        Image.fromarray(A[:, 50:250]).resize((253, 253), Image.Resampling.BICUBIC)
    )
    assert np.array_equal(_cut(pixels(blank)[0], placement.content), expected)


def test_rgba_is_composited_on_the_white_canvas() -> None:
    alpha = np.tile(np.linspace(0, 255, 253).round().astype(np.uint8), (253, 1))[..., None]
    rgba = np.concatenate([pattern(253, 253, seed=1), alpha], axis=-1)
    _, blank, _, layout = compose(image(A), image(rgba), image(B), 256, 256, 2, "stretch")
    cell = _cut(pixels(blank)[0], layout.paste("a_prime")).astype(float)
    a = alpha / 255.0
    expected = pattern(253, 253, seed=1) * a + 255 * (1 - a)
    assert np.abs(cell - expected).max() <= 1.0  # one rounding step
    assert (cell[:, 0] == 255).all()  # alpha 0: pure canvas, not the colour under it


def test_grayscale_is_the_same_as_its_rgb_copy() -> None:
    gray = pattern(200, 150)[..., :1]
    _, from_gray, _, _ = compose(image(gray), image(A_PRIME), image(B), 256, 256, 2, "stretch")
    _, from_rgb, _, _ = compose(
        image(np.repeat(gray, 3, -1)), image(A_PRIME), image(B), 256, 256, 2, "stretch"
    )
    assert torch.equal(from_gray, from_rgb)


def test_one_example_pair_and_n_images_in_b_give_n_grids() -> None:
    bs = [pattern(256, 320, seed=s) for s in (2, 3, 4)]
    grids, blanks, mask, layout = compose(
        image(A), image(A_PRIME), image(*bs), 256, 256, 2, "letterbox"
    )
    assert grids.shape == (3, 512, 512, 3) and blanks.shape == (3, 512, 512, 3)
    assert mask.shape == (3, 512, 512)
    assert len(layout.b_placements) == 3
    for index, b in enumerate(bs):
        single, _, _, _ = compose(image(A), image(A_PRIME), image(b), 256, 256, 2, "letterbox")
        assert torch.equal(grids[index], single[0])


def test_equal_batches_pair_up_image_by_image() -> None:
    a2, b2 = image(A, pattern(300, 200, seed=5)), image(B, pattern(256, 320, seed=6))
    grids, _, _, _ = compose(a2, image(A_PRIME), b2, 256, 256, 2, "stretch")
    second, _, _, _ = compose(a2[1:], image(A_PRIME), b2[1:], 256, 256, 2, "stretch")
    assert torch.equal(grids[1], second[0])


def test_layout_describes_the_grid() -> None:
    _, _, _, layout = compose(image(A), image(A_PRIME), image(B), 320, 192, 2, "crop")
    assert isinstance(layout, GridLayout)
    assert (layout.grid_width, layout.grid_height, layout.fit) == (640, 384, "crop")
    assert layout.cell("b_prime") == Rect(320, 192, 320, 192)
    assert layout.b_placements[0].source_width == 256


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a": image(A)[:0]}, "a is empty"),
        ({"a_prime": torch.zeros(1, 0, 10, 3)}, "a_prime is empty"),
        ({"b": torch.zeros(1, 10, 0, 3)}, "b is empty"),
        ({"b": torch.zeros(10, 10, 3)}, r"b: expected an IMAGE shaped \[batch"),
        ({"a": torch.zeros(1, 8, 8, 5)}, "a has 5 channels"),
        (
            {"a_prime": image(A_PRIME, A_PRIME), "b": image(B, B, B)},
            "Batch sizes do not match: a has 1, a_prime has 2, b has 3.*1 image.*N",
        ),
        ({"cell_width": 300}, "cell_width = 300 px is not a multiple of 64.*256 or 320"),
        ({"cell_height": 100}, "cell_height = 100 px .* 64 or 128"),
        ({"cell_width": 32}, "cell_width = 32 px is too small"),
        ({"cell_height": 8192}, "cell_height = 8192 px is too large.*8192 px limit"),
        ({"border": 0}, "border = 0 px is out of range: use 1 to 64"),
        ({"border": 65}, "border = 65 px is out of range"),
        ({"fit": "squash"}, "fit = 'squash' is not one of"),
        ({"arrangement": "diagonal"}, "arrangement = 'diagonal' is not one of"),
    ],
)
def test_bad_input_names_the_input_and_the_fix(kwargs: dict, message: str) -> None:
    args = {
        "a": image(A),
        "a_prime": image(A_PRIME),
        "b": image(B),
        "cell_width": 256,
        "cell_height": 256,
        "border": 2,
        "fit": "stretch",
        "arrangement": ARRANGEMENT_DEFAULT,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        compose(**args)


def test_batch_mismatch_between_two_batched_inputs_is_an_error() -> None:
    with pytest.raises(ValueError, match="a has 2, a_prime has 1, b has 3"):
        compose(image(A, A), image(A_PRIME), image(B, B, B))


def test_non_tensor_input_is_rejected_by_name() -> None:
    with pytest.raises(TypeError, match="a_prime: expected an IMAGE tensor"):
        compose(image(A), "not an image", image(B))  # type: ignore[arg-type]


@pytest.mark.parametrize("node", list(grid.NODE_CLASS_MAPPINGS.values()))
def test_every_node_documents_its_inputs_and_outputs(node: type) -> None:
    inputs = node.INPUT_TYPES()["required"]
    assert all(options.get("tooltip") for _, options in inputs.values())
    assert len(node.OUTPUT_TOOLTIPS) == len(node.RETURN_TYPES) == len(node.RETURN_NAMES)
    assert node.CATEGORY == "Analogist" and node.DESCRIPTION
    assert callable(getattr(node(), node.FUNCTION))


def test_node_ids_and_layout_type_are_stable() -> None:
    assert set(grid.NODE_CLASS_MAPPINGS) == {
        "AnalogistGridCompose",
        "AnalogistMarkAndArrow",
        "AnalogistGridCrop",
        "AnalogistExamplePair",  # added with several example pairs (issue 12)
    }
    assert set(grid.NODE_DISPLAY_NAME_MAPPINGS) == set(grid.NODE_CLASS_MAPPINGS)
    assert LAYOUT_TYPE == "ANALOGIST_LAYOUT"
    assert grid.AnalogistGridCompose.RETURN_TYPES == ("IMAGE", "IMAGE", "MASK", LAYOUT_TYPE)
    assert grid.AnalogistGridCompose.INPUT_TYPES()["required"]["fit"][0] == list(FITS)
