"""Several example pairs through the grid nodes: Example Pair chain -> Grid Compose ->
Mark and Arrow -> Grid Crop (docs/design.md, "Several example pairs (K-shot)")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENT_ALIGNED, ARRANGEMENTS, MAX_PAIRS
from comfyui_analogist.nodes import grid
from PIL import Image
from support.grid_images import image, pattern, pixels

compose = grid.AnalogistGridCompose().compose
add_pair = grid.AnalogistExamplePair().add
mark = grid.AnalogistMarkAndArrow().mark
crop = grid.AnalogistGridCrop().crop

A = [pattern(300, 200, seed=10 + k) for k in range(MAX_PAIRS)]
A_PRIME = [pattern(180, 240, seed=20 + k) for k in range(MAX_PAIRS)]
B = pattern(256, 320, seed=2)
RED = (230, 0, 0)


def _chain(pairs: int):
    """Example Pair nodes for pairs 2..K, chained in order (None for one pair)."""
    examples = None
    for k in range(1, pairs):
        (examples,) = add_pair(image(A[k]), image(A_PRIME[k]), examples)
    return examples


def _compose(pairs: int, arrangement: str = ARRANGEMENTS[0], b=None, cell: int = 256):
    return compose(
        image(A[0]),
        image(A_PRIME[0]),
        b if b is not None else image(B),
        cell,
        cell,
        2,
        "stretch",
        arrangement,
        examples=_chain(pairs),
    )


def _fitted(array: np.ndarray, size: int = 253) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize((size, size), Image.Resampling.BICUBIC))


def _cut(array: np.ndarray, rect) -> np.ndarray:
    return array[rect.y : rect.bottom, rect.x : rect.right]


def test_without_examples_grid_compose_is_unchanged() -> None:
    old = compose(image(A[0]), image(A_PRIME[0]), image(B), 256, 256, 2, "stretch")
    new = compose(image(A[0]), image(A_PRIME[0]), image(B), 256, 256, 2, "stretch", examples=None)
    assert all(torch.equal(x, y) for x, y in zip(old[:3], new[:3], strict=True))
    assert old[3] == new[3] and new[3].pairs == 1


@pytest.mark.parametrize("pairs", [2, 3, MAX_PAIRS])
@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_each_pair_gets_its_row_and_the_query_row_is_last(pairs: int, arrangement: str) -> None:
    grid_out, blank, mask, layout = _compose(pairs, arrangement)
    rows = pairs + 1
    expected_size = (512, 256 * rows) if arrangement == ARRANGEMENTS[0] else (256 * rows, 512)
    assert (layout.grid_width, layout.grid_height) == expected_size
    assert tuple(blank.shape) == (1, expected_size[1], expected_size[0], 3)
    out = pixels(blank)[0]
    for k in range(pairs):
        prefix = "a" if k == 0 else f"a{k + 1}"
        assert np.array_equal(_cut(out, layout.paste(prefix)), _fitted(A[k])), prefix
        assert np.array_equal(_cut(out, layout.paste(f"{prefix}_prime")), _fitted(A_PRIME[k]))
    assert np.array_equal(_cut(out, layout.paste("b")), _fitted(B))
    assert (_cut(out, layout.paste("b_prime")) == 0).all()
    # Query row last: B' is the bottom-right cell; the mask covers it and nothing else.
    b_prime = layout.cell("b_prime")
    assert (b_prime.right, b_prime.bottom) == expected_size
    assert mask[0].sum().item() == 256 * 256 and mask[0, -1, -1].item() == 1.0
    # The sampler starts with B's cell copied into B''s.
    full = pixels(grid_out)[0]
    assert np.array_equal(_cut(full, b_prime), _cut(full, layout.cell("b")))


def test_a_batch_of_b_gives_one_grid_per_b_sharing_the_examples() -> None:
    bs = image(pattern(256, 320, seed=30), pattern(256, 320, seed=31))
    grid_out, _, _, layout = _compose(2, b=bs)
    assert (
        grid_out.shape[0] == 2 and len(layout.b_placements) == 2 and len(layout.fingerprints) == 2
    )
    out = pixels(grid_out)
    assert np.array_equal(_cut(out[0], layout.cell("a2")), _cut(out[1], layout.cell("a2")))


def test_the_pair_limit_is_a_clear_error_naming_why() -> None:
    examples = _chain(MAX_PAIRS)
    with pytest.raises(
        ValueError, match=rf"at most {MAX_PAIRS}.*grid.*memory|at most {MAX_PAIRS}.*square"
    ):
        add_pair(image(A[0]), image(A_PRIME[0]), examples)
    too_many = examples + ((image(A[0]), image(A_PRIME[0])),)
    with pytest.raises(
        ValueError, match=rf"examples: {MAX_PAIRS + 1} example pairs.*at most {MAX_PAIRS}"
    ):
        compose(image(A[0]), image(A_PRIME[0]), image(B), 256, 256, 2, "stretch", examples=too_many)


def test_a_grid_over_the_size_limit_is_refused() -> None:
    with pytest.raises(ValueError, match=r"examples: 4 example pairs.*10240 px long.*8192"):
        _compose(4, cell=2048)


def test_a_wrong_examples_value_and_mismatched_batches_name_the_input() -> None:
    with pytest.raises(TypeError, match="examples: expected the EXAMPLES output"):
        compose(image(A[0]), image(A_PRIME[0]), image(B), examples="not pairs")  # type: ignore[arg-type]
    (examples,) = add_pair(image(A[1], A[2], A[3]), image(A_PRIME[1]))
    with pytest.raises(ValueError, match=r"examples pair 2 \(a\) has 3.*b has 2"):
        compose(image(A[0]), image(A_PRIME[0]), image(B, B), examples=examples)


def test_mark_and_arrow_labels_every_pair_and_draws_every_rows_arrow() -> None:
    _, blank, _, layout = _compose(3)
    out = pixels(mark(blank, layout)[0])[0]
    squares = {}
    for name in layout.region_names:
        corner = layout.paste(name)
        square = out[corner.y : corner.y + 36, corner.x : corner.x + 36]
        assert (square[:2] == 0).all() and (square == 255).all(axis=-1).sum() > 30, name
        squares[name] = square.tobytes()
    assert len(set(squares.values())) == 8  # A1, A1', A2, A2', A3, A3', B, B': all different
    red = (out == RED).all(axis=-1)
    for row in range(4):  # an arrow across the middle of every row, at x = 256
        y = 256 * row + 128
        assert red[y, 256 - 25 : 256 + 26].all(), row
    # One pair keeps the paper's four labels: the A square reads "A", not "A1".
    _, blank1, _, layout1 = _compose(1)
    one = pixels(mark(blank1, layout1, draw_arrows=False)[0])[0]
    corner = layout1.paste("a")
    paper_a = one[corner.y : corner.y + 36, corner.x : corner.x + 36].tobytes()
    assert paper_a != squares["a"]


def test_mark_and_arrow_on_the_transposed_grid_points_down_each_column() -> None:
    _, blank, _, layout = _compose(2, ARRANGEMENT_ALIGNED)
    red = (pixels(mark(blank, layout, draw_labels=False)[0])[0] == RED).all(axis=-1)
    for column in range(3):
        x = 256 * column + 128
        assert red[256 - 25 : 256 + 26, x].all(), column


def test_grid_crop_cuts_b_prime_and_strips_every_cell() -> None:
    grid_out, _, _, layout = _compose(3)
    b_prime, strip = crop(grid_out, layout, "original size of B")
    assert tuple(b_prime.shape) == (1, 320, 256, 3)
    assert tuple(strip.shape) == (1, 256, 8 * 256, 3)
    full = pixels(grid_out)[0]
    assert np.array_equal(pixels(strip)[0][:, 2 * 256 : 3 * 256], _cut(full, layout.cell("a2")))


def test_grid_crop_refuses_a_layout_from_another_pair_count() -> None:
    grid_two, _, _, _ = _compose(2)
    _, _, _, layout_three = _compose(3)
    with pytest.raises(ValueError, match="is 512x768 px but the layout describes a 512x1024"):
        crop(grid_two, layout_three)


def test_an_example_pair_names_itself_and_its_place_in_the_chain() -> None:
    (two,) = add_pair(image(A[1]), image(A_PRIME[1]))
    with pytest.raises(ValueError, match=r"Example Pair \(pair 3\) a_prime is empty"):
        add_pair(image(A[2]), torch.zeros(0, 64, 64, 3), two)
    with pytest.raises(TypeError, match=r"Example Pair \(pair 2\) a: expected an IMAGE tensor"):
        add_pair("not an image", image(A_PRIME[1]))
