"""The subgraph blueprint ``subgraphs/Analogist.json``: generated, consistent, and the method.

ComfyUI 0.30.0 serves ``custom_nodes/<pack>/subgraphs/*.json`` at ``/global_subgraphs``
(tests/host/test_artist_checks.py checks the real server lists it); here the file itself:
what ``scripts/build_subgraphs.py`` makes, a root graph of one subgraph node as the
frontend requires, links that agree with the sockets at both ends, and inner nodes that
are this pack's and the host's real nodes with the paper's settings.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from comfyui_analogist.analogist_cli.workflow_format import widget_values_by_name

ROOT = Path(__file__).resolve().parents[2]
FILE = ROOT / "subgraphs" / "Analogist.json"


def builder():
    if "analogist_build_subgraphs" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "analogist_build_subgraphs", ROOT / "scripts" / "build_subgraphs.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["analogist_build_subgraphs"]


@pytest.fixture(scope="module")
def shipped():
    return json.loads(FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def definitions():
    return builder().node_definitions()


def test_the_shipped_blueprint_is_what_the_generator_makes():
    if not os.environ.get("ANALOGIST_COMFYUI_HOST"):
        pytest.skip("the blueprint is generated from ComfyUI 0.30.0's node definitions")
    assert FILE.read_bytes() == builder().render(), (
        "run: .venv/bin/python scripts/build_subgraphs.py"
    )


def test_the_root_graph_is_one_subgraph_node_with_the_definitions_sockets(shipped):
    (definition,) = shipped["definitions"]["subgraphs"]
    (root,) = shipped["nodes"]
    assert root["type"] == definition["id"] and definition["name"] == "Analogist"
    assert definition["category"] == "Analogist"
    assert [(s["name"], s["type"]) for s in root["inputs"]] == [
        (s["name"], s["type"]) for s in definition["inputs"]
    ]
    assert [(s["name"], s["type"]) for s in root["outputs"]] == [
        (s["name"], s["type"]) for s in definition["outputs"]
    ]
    assert {s["name"] for s in definition["inputs"]} == {
        "model",
        "clip",
        "vae",
        "a",
        "a_prime",
        "b",
        "prompt",
    }
    assert [s["name"] for s in definition["outputs"]] == ["b_prime", "strip"]
    inner_ids = {str(n["id"]) for n in definition["nodes"]} | {"-1"}
    for node_id, widget in root["properties"]["proxyWidgets"]:
        assert node_id in inner_ids, f"promoted widget {widget} of an unknown node {node_id}"


def test_every_link_agrees_with_the_sockets_at_both_ends(shipped, definitions):
    (definition,) = shipped["definitions"]["subgraphs"]
    nodes = {n["id"]: n for n in definition["nodes"]}
    links = {link["id"]: link for link in definition["links"]}
    assert len(links) == len(definition["links"])
    for link in links.values():
        if link["origin_id"] == -10:
            source = definition["inputs"][link["origin_slot"]]
            assert link["id"] in source["linkIds"] and source["type"] == link["type"]
        else:
            output = nodes[link["origin_id"]]["outputs"][link["origin_slot"]]
            assert link["id"] in output["links"] and output["type"] == link["type"]
        if link["target_id"] == -20:
            sink = definition["outputs"][link["target_slot"]]
            assert link["id"] in sink["linkIds"] and sink["type"] == link["type"]
        else:
            socket = nodes[link["target_id"]]["inputs"][link["target_slot"]]
            assert socket["link"] == link["id"] and socket["type"] == link["type"]
    # Every socket a node must have is fed (optional ones may stay empty).
    for node in nodes.values():
        required = definitions[node["type"]]["input"]["required"]
        for socket in node["inputs"]:
            if socket["name"] in required and "widget" not in socket:
                assert socket["link"] is not None, f"{node['type']}.{socket['name']} is unfed"


def test_inside_is_the_method_with_the_papers_settings(shipped, definitions):
    (definition,) = shipped["definitions"]["subgraphs"]
    by_type = {n["type"]: n for n in definition["nodes"]}
    assert set(by_type) >= {
        "AnalogistGridCompose",
        "AnalogistApply",
        "InpaintModelConditioning",
        "KSampler",
        "VAEDecode",
        "AnalogistGridCrop",
    }
    apply = widget_values_by_name(by_type["AnalogistApply"], definitions["AnalogistApply"])
    assert apply["sac_scale"] == 1.3 and (apply["start_layer"], apply["end_layer"]) == (3, 11)
    assert apply["allow_non_inpainting"] is False
    sampler = widget_values_by_name(by_type["KSampler"], definitions["KSampler"])
    assert (sampler["steps"], sampler["cfg"], sampler["denoise"]) == (50, 15.0, 0.98)
    assert by_type["KSampler"]["widgets_values"][1] == "randomize"
