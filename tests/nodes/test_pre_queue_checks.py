"""The checks ComfyUI runs before queueing (``VALIDATE_INPUTS``), called as the host calls
them: only the inputs they name, ``None`` for one fed by a link. The same checks through the
real server are in tests/host/test_artist_checks.py."""

from __future__ import annotations

import math

import pytest
from comfyui_analogist.nodes.attention import AnalogistApply, AnalogistCAMPatch, AnalogistSACPatch
from comfyui_analogist.nodes.grid import AnalogistGridCompose, AnalogistMarkAndArrow

PAPER = {"start_layer": 3, "end_layer": 11, "start_percent": 0.0, "end_percent": 1.0}


@pytest.mark.parametrize("node", [AnalogistSACPatch, AnalogistApply])
@pytest.mark.parametrize(
    ("change", "first_words"),
    [
        ({"sac_scale": math.nan}, "SAC strength must be a number from 0 to 10"),
        ({"sac_scale": math.inf}, "SAC strength must be a number from 0 to 10"),
        ({"sac_scale": 10.5}, "SAC strength must be a number from 0 to 10"),
        ({"start_layer": 8, "end_layer": 8}, "No layers chosen: end_layer (8)"),
        ({"end_layer": 201}, "Layer out of range: end_layer is 201"),
        ({"start_percent": 0.6, "end_percent": 0.5}, "Step range is backwards"),
        ({"end_percent": math.nan}, "Step range out of bounds: end_percent is nan"),
    ],
)
def test_bad_sac_settings_are_refused_in_artist_words(node, change, first_words):
    answer = node.VALIDATE_INPUTS(**{"sac_scale": 1.3, **PAPER, **change})
    assert isinstance(answer, str) and answer.startswith(first_words), answer


def test_cam_checks_the_same_settings_without_a_scale():
    assert AnalogistCAMPatch.VALIDATE_INPUTS(**PAPER) is True
    bad = AnalogistCAMPatch.VALIDATE_INPUTS(**{**PAPER, "start_layer": 12})
    assert bad.startswith("No layers chosen")


@pytest.mark.parametrize("node", [AnalogistSACPatch, AnalogistApply])
def test_good_linked_and_paper_settings_pass(node):
    assert node.VALIDATE_INPUTS(sac_scale=1.3, **PAPER) is True
    assert node.VALIDATE_INPUTS(sac_scale=1.3, **{**PAPER, "end_layer": 0}) is True  # paper's
    linked = {name: None for name in PAPER}
    assert node.VALIDATE_INPUTS(sac_scale=None, **linked) is True
    assert node.VALIDATE_INPUTS(sac_scale=1.3, **{**PAPER, "start_layer": None}) is True


@pytest.mark.parametrize(
    ("settings", "first_words"),
    [
        ({"cell_width": 100}, "Cell size not usable: cell_width = 100 px is not a multiple of 64"),
        ({"cell_height": 32}, "Cell size not usable: cell_height = 32 px is too small"),
        ({"border": 0}, "Border too wide or too thin: border = 0 px"),
        ({"cell_width": 64, "border": 17}, "Border too wide or too thin: border = 17 px"),
    ],
)
def test_bad_grid_settings_are_refused_in_artist_words(settings, first_words):
    answer = AnalogistGridCompose.VALIDATE_INPUTS(
        **{"cell_width": 256, "cell_height": 256, "border": 2, **settings}
    )
    assert isinstance(answer, str) and answer.startswith(first_words), answer


def test_grid_settings_fed_by_links_are_left_for_the_run():
    assert AnalogistGridCompose.VALIDATE_INPUTS(cell_width=None, cell_height=None, border=2)
    assert AnalogistGridCompose.VALIDATE_INPUTS(cell_width=256, cell_height=256, border=None)


def test_a_colour_that_is_not_one_is_refused_before_the_queue():
    assert AnalogistMarkAndArrow.VALIDATE_INPUTS("#000000", "255, 255, 255", None) is True
    answer = AnalogistMarkAndArrow.VALIDATE_INPUTS("#000000", "#FFFFFF", "red")
    assert answer.startswith("Colour not understood: arrow_color = 'red' is not a colour")
