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


SEARCH_PHRASES = (
    "analogy",
    "image analogy",
    "visual prompt",
    "before after",
    "in-context",
    "style transfer",
)


def search_results(frontend, phrase: str) -> list[str]:
    """Double-click the empty canvas, type ``phrase`` into the node search box: the hits'
    first lines (their display names), best first."""
    page = frontend.page
    for _ in range(2):  # close a search box left open (the first Escape may only clear it)
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    page.mouse.dblclick(1500, 900)
    page.wait_for_timeout(1000)
    page.keyboard.type(phrase)
    page.wait_for_timeout(1500)
    hits = page.evaluate(
        """(phrase) => document.activeElement?.value === phrase
            ? [...document.querySelectorAll('[role=option]')].map(o => o.innerText.trim())
            : null""",
        phrase,
    )
    assert hits is not None, f"the node search box did not take {phrase!r}"
    return [hit.splitlines()[0].strip() for hit in hits if hit]


def test_searching_the_artists_words_finds_the_analogist_node_first(frontend):
    """The frontend ranks hits by how well the *name or display name* matches, then by how
    often core nodes are used; search aliases (a list) only let a node match at all. So
    where a core or partner node carries the phrase in its own name ("Context Windows",
    "Magnific Image Style Transfer") it stays above ours, and ours must come right after."""
    found = {phrase: search_results(frontend, phrase)[:3] for phrase in SEARCH_PHRASES}
    entry = "Analogist (SAC + CAM)"
    first = ("analogy", "image analogy", "visual prompt", "before after")
    wrong = {p: hits for p, hits in found.items() if p in first and hits[:1] != [entry]}
    assert not wrong, f"first hits in the node search: {wrong}"
    behind = {p: hits for p, hits in found.items() if entry not in hits}
    assert not behind, f"the Analogist node is not in the top 3: {behind}"
