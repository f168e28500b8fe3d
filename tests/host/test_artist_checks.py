"""What an artist sees from the real server (issue 22): bad settings refused at /prompt
before anything loads, a plain checkpoint refused on the canvas, the node library's names
and search aliases, and the pack's subgraph blueprint served at /global_subgraphs."""

from __future__ import annotations

import json
import time

import pytest
from comfyui_analogist.nodes import NODE_CLASS_MAPPINGS
from support.comfy_server import PACK_DIR_NAME
from support.images import pattern
from support.prompts import PAPER_RANGE, grid_nodes, inpaint_conditioning, sample_and_crop
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

CHECKPOINT = checkpoint_name(0)
SEARCH_PHRASES = (
    "analogy",
    "image analogy",
    "visual prompt",
    "before after",
    "in-context",
    "style transfer",
)


def analogist_prompt(checkpoint: str = CHECKPOINT, cell: int = 64, **apply) -> dict:
    """Grid Compose -> Analogist (SAC + CAM) -> inpainting KSampler -> Grid Crop -> SaveImage."""
    settings = {"sac_scale": 1.3, **PAPER_RANGE, **apply}
    return {
        **grid_nodes(checkpoint, ("artist_a.png", "artist_a_prime.png", "artist_b.png"), cell),
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red apple", "clip": ["1", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "8": inpaint_conditioning("6", "7"),
        "13": {
            "class_type": "AnalogistApply",
            "inputs": {"model": ["1", 0], "layout": ["5", 3], **settings},
        },
        **sample_and_crop(9, model=["13", 0], conditioning="8", steps=1, cfg=7.5, prefix="artist"),
    }


@pytest.fixture(scope="module")
def server(comfy_server):
    inputs = comfy_server.workspace / "input"
    pattern(80, 64, seed=1).save(inputs / "artist_a.png")
    pattern(80, 64, seed=2).save(inputs / "artist_a_prime.png")
    pattern(48, 40, seed=3).save(inputs / "artist_b.png")
    return comfy_server


def refused(server, prompt: dict) -> dict[str, list[str]]:
    """POST /prompt; it must be refused. Per node id: the error texts the frontend shows."""
    history_before = len(server.history())
    log_before = len(server.log_text())
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": "artist"})
    assert status == 400, f"not refused at /prompt: {status} {body}"
    time.sleep(0.5)
    assert len(server.history()) == history_before, "a refused prompt must not run"
    assert "model_type" not in server.log_text()[log_before:], "a model loaded for a bad prompt"
    return {
        node: [f"{e['message']}: {e['details']}" for e in entry["errors"]]
        for node, entry in body.get("node_errors", {}).items()
    }


@pytest.mark.parametrize(
    ("apply", "grid_cell", "node", "first_words"),
    [
        ({"start_layer": 11, "end_layer": 3}, 64, "13", "No layers chosen: end_layer (3)"),
        ({"start_percent": 0.8, "end_percent": 0.2}, 64, "13", "Step range is backwards"),
        ({"sac_scale": float("nan")}, 64, "13", "SAC strength must be a number from 0 to 10"),
        ({}, 100, "5", "Cell size not usable: cell_width = 100 px is not a multiple of 64"),
    ],
)
def test_bad_settings_are_refused_at_prompt_in_artist_words(
    server, apply, grid_cell, node, first_words
):
    errors = refused(server, analogist_prompt(cell=grid_cell, **apply))
    assert node in errors, f"no error on node {node}: {json.dumps(errors)}"
    assert any(first_words in text for text in errors[node]), errors[node]
    # The artist's words come first in each message, after the input the host names.
    for text in errors[node]:
        message = text.split(" - ", 1)[1]
        assert message.startswith(first_words.split(":")[0]), text


def test_a_linked_setting_is_not_judged_before_the_queue(server):
    """A value fed by a link is unknown at validation (None): the check lets it through.

    A missing image elsewhere keeps the prompt from running; the Analogist node must not
    be among the refused ones, though its literal end_layer is below the linked start."""
    if "PrimitiveInt" not in server.object_info():
        pytest.skip("this ComfyUI has no PrimitiveInt node to feed a setting by a link")
    prompt = analogist_prompt(end_layer=3)
    prompt["20"] = {"class_type": "PrimitiveInt", "inputs": {"value": 11}}
    prompt["13"]["inputs"]["start_layer"] = ["20", 0]
    prompt["2"]["inputs"]["image"] = "no_such_image.png"
    errors = refused(server, prompt)
    assert "2" in errors and "13" not in errors, errors


def test_a_plain_checkpoint_is_an_error_on_the_canvas(server):
    from support.reversion import cached_sd15_checkpoint, sd15_checkpoint_name

    plain = cached_sd15_checkpoint(seed=0)
    link = server.workspace / "models" / "checkpoints" / plain.name
    if not link.exists():
        link.symlink_to(plain)
    result = server.run(analogist_prompt(checkpoint=sd15_checkpoint_name(0)))
    assert not result.ok, "a plain checkpoint ran without a word"
    errors = [data for kind, data in result.messages if kind == "execution_error"]
    assert errors, result.error_text()
    assert errors[0]["node_type"] == "AnalogistApply"
    message = errors[0]["exception_message"]
    assert message.startswith(
        "This checkpoint is not an inpainting model: pick an inpainting checkpoint such as "
        "sd-v1-5-inpainting.ckpt"
    )
    assert "in Load Checkpoint, or turn on allow_non_inpainting on this node" in message


def test_the_library_shows_short_names_and_search_finds_the_entry_node(server):
    info = server.object_info()
    for node_id in NODE_CLASS_MAPPINGS:
        module = NODE_CLASS_MAPPINGS[node_id].__module__.rsplit(".", 1)[-1]
        if module in ("grid", "attention", "rank", "sampling"):
            name = info[node_id]["display_name"]
            assert len(name) <= 28, f"{node_id}: {name!r} is cut off in the node library"
    assert info["AnalogistApply"]["display_name"] == "Analogist (SAC + CAM)"
    if "search_aliases" not in info["CLIPTextEncode"]:
        pytest.skip("this ComfyUI (0.0.1) does not send search aliases to the frontend")
    aliases = info["AnalogistApply"]["search_aliases"]
    assert set(SEARCH_PHRASES) <= set(aliases), aliases
    others = [n for n in NODE_CLASS_MAPPINGS if n != "AnalogistApply"]
    for node_id in others:  # so the entry node is the one these phrases find first
        assert not set(SEARCH_PHRASES) & set(info[node_id].get("search_aliases", [])), node_id


def test_the_subgraph_blueprint_is_served_and_uses_only_known_nodes(server):
    import urllib.error

    try:
        listing = server.get_json("/global_subgraphs")
    except urllib.error.HTTPError as err:
        assert err.code == 404
        pytest.skip("this ComfyUI (0.0.1) has no subgraph blueprints; the folder is ignored")
    ours = {
        key: entry
        for key, entry in listing.items()
        if entry["info"]["node_pack"] == f"custom_nodes.{PACK_DIR_NAME}"
    }
    assert [entry["name"] for entry in ours.values()] == ["Analogist"], listing
    ((key, entry),) = ours.items()
    assert entry["source"] == "custom_node" and "path" not in entry
    full = server.get_json(f"/global_subgraphs/{key}")
    blueprint = json.loads(full["data"])
    (definition,) = blueprint["definitions"]["subgraphs"]
    info = server.object_info()
    unknown = {n["type"] for n in definition["nodes"]} - set(info)
    assert not unknown, f"the blueprint uses nodes this server lacks: {unknown}"
