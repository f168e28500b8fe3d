"""The example pictures reach ComfyUI's input folder when the pack loads (issue 22).

After a Manager or registry install only the pack's folder is copied; its templates name
``analogist_example_*.png`` in Load Image and ``reversion_inside`` in ReVersion's Learn.
These tests start the real server on a fresh workspace (empty ``input/``) and look at
what the artist would see: the files in ``input/`` and Load Image's list of pictures.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.comfy_server import ComfyServer, make_workspace

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "workflows" / "images"


def shipped() -> list[Path]:
    return sorted(p.relative_to(IMAGES) for p in IMAGES.rglob("*") if p.is_file())


def names_the_workflows_load() -> set[str]:
    names = set()
    for path in (ROOT / "workflows").glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] in ("LoadImage", "LoadImageMask"):
                names.add(node["widgets_values"][0])
    return names


@pytest.fixture(scope="module")
def fresh_server(tmp_path_factory):
    workspace = make_workspace(tmp_path_factory.mktemp("comfyui-fresh-input"))
    # The artist's own picture under one of the examples' names, and one of their own.
    (workspace / "input" / "analogist_example_b.png").write_bytes(b"the artist's own file")
    (workspace / "input" / "holiday.png").write_bytes(b"not ours")
    server = ComfyServer(workspace).start()
    server.info = server.object_info()
    yield server
    server.stop()


def test_pack_load_puts_every_example_picture_into_a_fresh_input_folder(fresh_server):
    input_dir = fresh_server.workspace / "input"
    for relative in shipped():
        if relative.name == "analogist_example_b.png":
            continue
        copied = input_dir / relative
        assert copied.is_file(), (
            f"{relative} not in input/ after the pack loaded\n{fresh_server.log_tail()}"
        )
        assert copied.read_bytes() == (IMAGES / relative).read_bytes(), relative
    # What Load Image offers: every picture the shipped workflows name.
    offered = set(fresh_server.info["LoadImage"]["input"]["required"]["image"][0])
    assert names_the_workflows_load() <= offered, sorted(names_the_workflows_load() - offered)
    assert "reversion_inside" in {p.parts[0] for p in shipped() if len(p.parts) > 1}
    assert (input_dir / "reversion_inside" / "text.json").is_file()


def test_a_users_file_with_an_example_name_is_left_untouched(fresh_server):
    input_dir = fresh_server.workspace / "input"
    assert (input_dir / "analogist_example_b.png").read_bytes() == b"the artist's own file"
    assert (input_dir / "holiday.png").read_bytes() == b"not ours"


def test_nothing_is_written_outside_the_input_folder(fresh_server):
    workspace = fresh_server.workspace
    names = {p.name for p in shipped()}
    stray = [
        p
        for p in workspace.rglob("*")
        if p.name in names
        and "input" not in p.relative_to(workspace).parts[:1]
        and "custom_nodes" not in p.relative_to(workspace).parts[:1]
    ]
    assert not stray, stray
