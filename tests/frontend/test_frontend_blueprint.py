"""The pack's subgraph blueprint in the real frontend (ComfyUI 0.30.0's pinned 1.47).

The frontend fetches ``/global_subgraphs`` at start-up and offers each entry as a node
("Subgraph Blueprints/<category>" in the node library, a ``SubgraphBlueprint.<name>``
node type); here the page must have loaded ours without an error, and the file dropped
on the canvas must become one Analogist node whose inside is the method, every inner
node known, every saved value on its widget, flattened by the frontend into the prompt
it would queue.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.frontend, pytest.mark.host]

ROOT = Path(__file__).resolve().parents[2]
BLUEPRINT = ROOT / "subgraphs" / "Analogist.json"
METHOD = {
    "AnalogistGridCompose",
    "AnalogistApply",
    "CLIPTextEncode",
    "InpaintModelConditioning",
    "KSampler",
    "VAEDecode",
    "AnalogistGridCrop",
}


def test_the_blueprint_loads_at_start_and_drops_as_one_analogist_node(frontend):
    failures = [
        m[1] for m in frontend.console.messages if "Failed to load subgraph blueprint" in m[1]
    ]
    assert not failures, failures
    frontend.drop_workflow(BLUEPRINT)
    assert frontend.problems_shown() == []
    inside = frontend.page.evaluate(
        """() => {
            const [node] = app.rootGraph.nodes;
            return {
                title: node.title,
                inputs: node.inputs.map(i => i.name),
                outputs: node.outputs.map(o => o.name),
                inner: node.subgraph.nodes.map(n => ({
                    type: n.type,
                    registered: !!LiteGraph.registered_node_types[n.type],
                    values: n.widgets?.map(w => w.value) ?? [],
                })),
            };
        }"""
    )
    assert inside["title"] == "Analogist"
    assert set(inside["inputs"]) >= {"model", "clip", "vae", "a", "a_prime", "b", "prompt"}
    assert inside["outputs"] == ["b_prime", "strip"]
    assert {n["type"] for n in inside["inner"]} == METHOD
    assert all(n["registered"] for n in inside["inner"]), inside["inner"]
    saved = json.loads(BLUEPRINT.read_text())["definitions"]["subgraphs"][0]["nodes"]
    apply = next(n for n in inside["inner"] if n["type"] == "AnalogistApply")
    wanted = next(n for n in saved if n["type"] == "AnalogistApply")["widgets_values"]
    assert apply["values"][: len(wanted)] == wanted
    prompt = frontend.page.evaluate("async () => (await app.graphToPrompt()).output")
    queued = {entry["class_type"] for entry in prompt.values()}
    assert queued >= METHOD, f"the frontend did not flatten the blueprint: {sorted(queued)}"
