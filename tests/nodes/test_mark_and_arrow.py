"""AnalogistMarkAndArrow: label squares and red arrows where the paper's geometry says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_attn.geometry import REGIONS
from comfyui_analogist.analogist_pixels import marks
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENT_ALIGNED, ARRANGEMENTS
from comfyui_analogist.nodes import grid
from PIL import ImageFont
from support.grid_images import image, pattern, pixels

compose = grid.AnalogistGridCompose().compose
mark = grid.AnalogistMarkAndArrow().mark

RED = (230, 0, 0)


def _blank(cell: int = 256, arrangement: str = ARRANGEMENTS[0], count: int = 1):
    bs = [pattern(200, 150, seed=2 + i) for i in range(count)]
    _, blank, _, layout = compose(
        image(pattern(160, 120, 0)),
        image(pattern(120, 160, 1)),
        image(*bs),
        cell,
        cell,
        2,
        "stretch",
        arrangement,
    )
    return blank, layout


def _square(out: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    return out[y : y + side, x : x + side]


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_label_squares_sit_at_each_paste_corner(arrangement: str) -> None:
    blank, layout = _blank(arrangement=arrangement)
    before, out = pixels(blank)[0], pixels(mark(blank, layout, draw_arrows=False)[0])[0]
    for region in REGIONS:
        corner = layout.paste(region)
        square = _square(out, corner.x, corner.y, 36)
        ring = np.concatenate(
            [
                square[:3].reshape(-1, 3),
                square[-3:].reshape(-1, 3),
                square[:, :3].reshape(-1, 3),
                square[:, -3:].reshape(-1, 3),
            ]
        )
        assert (ring == 0).all(), region  # black margin around the text
        assert (square == 255).all(axis=-1).sum() > 60, region  # white text inside
        # Nothing beyond the 36 px square changed.
        assert np.array_equal(
            out[corner.y + 36, corner.x : corner.x + 40],
            before[corner.y + 36, corner.x : corner.x + 40],
        )
        assert np.array_equal(
            out[corner.y : corner.y + 40, corner.x + 36],
            before[corner.y : corner.y + 40, corner.x + 36],
        )
    changed = (out != before).any(axis=-1)
    assert changed.sum() == ((out != before).any(axis=-1) & _label_area(layout, 36)).sum()


def _label_area(layout, side: int) -> np.ndarray:
    area = np.zeros((layout.grid_height, layout.grid_width), bool)
    for region in REGIONS:
        corner = layout.paste(region)
        area[corner.y : corner.y + side, corner.x : corner.x + side] = True
    return area


def test_labels_follow_the_arrangement() -> None:
    paper_grid, paper = _blank()
    aligned_grid, aligned = _blank(arrangement=ARRANGEMENT_ALIGNED)
    p = pixels(mark(paper_grid, paper, draw_arrows=False)[0])[0]
    q = pixels(mark(aligned_grid, aligned, draw_arrows=False)[0])[0]
    squares = {}
    for region in REGIONS:
        a, b = paper.paste(region), aligned.paste(region)
        squares[region] = _square(p, a.x, a.y, 36)
        assert np.array_equal(squares[region], _square(q, b.x, b.y, 36)), region
    # Four different texts.
    assert len({square.tobytes() for square in squares.values()}) == 4


@pytest.mark.parametrize("cell", [256, 512])
def test_arrows_point_right_across_the_middle_of_each_row(cell: int) -> None:
    blank, layout = _blank(cell)
    out = pixels(mark(blank, layout, draw_labels=False)[0])[0]
    red = (out == RED).all(axis=-1)
    half, width = cell // 10, cell // 64
    for y in (cell // 2, cell // 2 + cell):
        assert red[y, cell - half : cell + half + 1].all()  # the shaft, end to end
        assert red[y - width // 2 : y + width // 2 + 1, cell - half].all()  # its thickness
        assert not red[y - width // 2 - 2, cell - half]
        # Head strokes at +-45 degrees, 0.35 of the arrow long, meeting at the tip.
        tip = 0.35 * 2 * half / np.sqrt(2)
        for dy in (-1, 1):
            assert red[round(y + dy * tip), round(cell + half - tip)]
        assert not red[y, cell + half + width]
    rows = np.nonzero(red.any(axis=1))[0]
    columns = np.nonzero(red.any(axis=0))[0]
    reach = round(0.35 * 2 * half) + width
    assert rows.min() >= cell // 2 - reach and rows.max() <= cell // 2 + cell + reach
    assert columns.min() >= cell - half - width and columns.max() <= cell + half + width


def test_arrows_point_down_when_a_is_aligned_with_b() -> None:
    blank, layout = _blank(arrangement=ARRANGEMENT_ALIGNED)
    red = (pixels(mark(blank, layout, draw_labels=False)[0])[0] == RED).all(axis=-1)
    for x in (128, 384):
        assert red[231:282, x].all()
    assert not red[128, 231:282].any()


def test_arrows_match_opencvs_arrowed_line_as_in_the_original_code() -> None:
    cv2 = pytest.importorskip("cv2")
    blank, layout = _blank()
    ours = pixels(mark(blank, layout, draw_labels=False)[0])[0]
    theirs = np.ascontiguousarray(pixels(blank)[0])
    for y in (128, 384):
        cv2.arrowedLine(theirs, (231, y), (281, y), RED, 4, tipLength=0.35)
    assert np.array_equal(ours, theirs)


def test_sizes_scale_with_the_cell() -> None:
    _, layout = _blank(512)
    assert (marks.default_label_side(layout), marks.default_arrow_width(layout)) == (72, 8)
    _, layout = _blank(256)
    assert (marks.default_label_side(layout), marks.default_arrow_width(layout)) == (36, 4)


def test_options_change_sizes_and_colours() -> None:
    blank, layout = _blank()
    out = pixels(mark(blank, layout, 20, "#00FF00", "0, 0, 255", "10,20,30", 2)[0])[0]
    corner = layout.paste("b")
    square = _square(out, corner.x, corner.y, 20)
    assert (square[0] == (0, 255, 0)).all() and (square == (0, 0, 255)).all(axis=-1).any()
    assert not (out[corner.y + 20, corner.x : corner.x + 20] == (0, 255, 0)).all(axis=-1).any()
    arrow = (out == (10, 20, 30)).all(axis=-1)
    assert arrow[127:130, 240].all() and not arrow[126, 240] and not arrow[130, 240]


def test_switching_both_off_returns_the_grid_unchanged() -> None:
    blank, layout = _blank()
    out = mark(blank, layout, draw_labels=False, draw_arrows=False)[0]
    assert torch.equal(out, blank)


def test_every_grid_of_a_batch_is_marked_and_the_input_is_untouched() -> None:
    blank, layout = _blank(count=3)
    copy = blank.clone()
    out = pixels(mark(blank, layout)[0])
    assert out.shape == (3, 512, 512, 3)
    assert torch.equal(blank, copy)
    for one in out:
        assert (one[128, 240] == RED).all() and (one[5, 5] == 0).all()


def test_the_font_comes_with_pillow() -> None:
    assert isinstance(marks.label_font(36), ImageFont.FreeTypeFont)
    assert marks.label_style(36)[0] > 24  # the text fills most of the square


def test_a_pillow_without_freetype_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFont, "load_default", lambda size=None: ImageFont.ImageFont())
    marks.label_font.cache_clear()
    marks.label_style.cache_clear()
    try:
        blank, layout = _blank()
        with pytest.raises(RuntimeError, match="Pillow >= 10.1 built with FreeType"):
            mark(blank, layout)
        assert mark(blank, layout, draw_labels=False)[0].shape == blank.shape
    finally:
        marks.label_font.cache_clear()
        marks.label_style.cache_clear()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"arrow_color": "red"}, ValueError, "arrow_color = 'red' is not a colour"),
        ({"label_color": "1,2"}, ValueError, "label_color = '1,2' is not a colour"),
        ({"text_color": "#GGGGGG"}, ValueError, "text_color"),
        ({"label_size": 129}, ValueError, "label_size = 129 px is out of range.*36 px"),
        ({"arrow_width": 33}, ValueError, "arrow_width = 33 px is out of range.*4 px"),
        (
            {"grid": torch.zeros(1, 256, 256, 3)},
            ValueError,
            "grid is 256x256 px but the layout describes a 512x512",
        ),
        ({"layout": "layout"}, TypeError, "layout: expected the ANALOGIST_LAYOUT"),
    ],
)
def test_bad_input_names_the_input(kwargs: dict, error: type, message: str) -> None:
    blank, layout = _blank()
    args = {"grid": blank, "layout": layout, **kwargs}
    with pytest.raises(error, match=message):
        mark(**args)
