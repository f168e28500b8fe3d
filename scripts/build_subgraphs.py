"""Build the pack's subgraph blueprint ``subgraphs/Analogist.json`` (the whole method as one node).

    .venv/bin/python scripts/build_subgraphs.py          # (re)write it
    .venv/bin/python scripts/build_subgraphs.py --check  # exit 1 if it is stale

ComfyUI 0.30.0 lists every ``custom_nodes/<pack>/subgraphs/*.json`` at ``/global_subgraphs``
(``app/subgraph_manager.py``) and its frontend offers each one in the node library as a node
that can be dropped into any graph. The file is a workflow whose root graph is one subgraph
node, its definition under ``definitions.subgraphs`` (the format of ComfyUI's own
``blueprints/``). Older hosts (0.0.1) never read the folder.

Inside: Grid Compose -> Analogist (SAC + CAM) -> the two prompts -> InpaintModelConditioning
-> KSampler -> VAE Decode -> Grid Crop, with the paper's settings. The blueprint node takes
a model, clip and vae (from any Load Checkpoint, LoRA, ...), A, A', B and the prompt, and
gives B' and the A | A' | B | B' strip. Node ids, widget order and sockets come from the
node classes through ``analogist.workflow_format``, as for the shipped workflows.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "subgraphs" / "Analogist.json"
NAME = "Analogist"
SUBGRAPH_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "comfyui-analogist/subgraphs/Analogist"))
DESCRIPTION = (
    "Image analogy (Analogist, SIGGRAPH 2024): change B the way A changed into A'. Needs an "
    "inpainting checkpoint (e.g. sd-v1-5-inpainting.ckpt) for model, clip and vae; describe "
    "B' in the prompt. Gives B' at B's size and an A | A' | B | B' strip."
)
INPUT_NODE_ID, OUTPUT_NODE_ID = -10, -20
# (name, type, label, [(inner node, its input)]); STRING is the positive prompt's text widget.
INPUTS: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = (
    ("model", "MODEL", "model (inpainting)", (("apply", "model"),)),
    ("clip", "CLIP", "clip", (("positive", "clip"), ("negative", "clip"))),
    ("vae", "VAE", "vae", (("cond", "vae"), ("decode", "vae"))),
    ("a", "IMAGE", "A (example before)", (("grid", "a"),)),
    ("a_prime", "IMAGE", "A' (example after)", (("grid", "a_prime"),)),
    ("b", "IMAGE", "B (to change)", (("grid", "b"),)),
    ("prompt", "STRING", "prompt (describe B')", (("positive", "text"),)),
)
OUTPUTS = (
    ("b_prime", "IMAGE", "B'", ("crop", 0)),
    ("strip", "IMAGE", "A | A' | B | B'", ("crop", 1)),
)
# Widgets of inner nodes shown on the blueprint node's face (the frontend's proxyWidgets).
PROMOTED: tuple[tuple[str, str], ...] = (
    ("-1", "prompt"),
    ("sampler", "seed"),
    ("sampler", "control_after_generate"),
    ("apply", "sac_scale"),
)
USED = (
    "AnalogistGridCompose",
    "AnalogistApply",
    "CLIPTextEncode",
    "InpaintModelConditioning",
    "KSampler",
    "VAEDecode",
    "AnalogistGridCrop",
)


def _workflows_module() -> Any:
    """workflows/build_workflows.py: the node definitions and the paper's settings (the
    module the tests import as ``build_workflows``, reused when already imported)."""
    if "build_workflows" in sys.modules:
        return sys.modules["build_workflows"]
    path = ROOT / "workflows" / "build_workflows.py"
    spec = importlib.util.spec_from_file_location("build_workflows", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def node_definitions() -> dict[str, dict]:
    wf = _workflows_module()
    saved = wf.USED_NODES
    wf.USED_NODES = tuple(dict.fromkeys(saved + USED))
    try:
        return wf.node_definitions()
    finally:
        wf.USED_NODES = saved


def blueprint(defs: dict[str, dict]) -> dict:
    wf = _workflows_module()
    from comfyui_analogist.analogist_cli.workflow_format import Graph

    g = Graph(defs)
    x = (0, 380, 760, 1140, 1520)
    grid = g.add(
        "AnalogistGridCompose",
        (x[0], 0),
        cell_width=wf.defaults.CELL,
        cell_height=wf.defaults.CELL,
        border=2,
        fit="stretch",
        arrangement="A' right of A (paper)",
    )
    apply = g.add(
        "AnalogistApply",
        (x[1], 0),
        layout=grid.out("layout"),
        sac_scale=wf.defaults.SAC_SCALE,
        start_layer=wf.defaults.START_LAYER,
        end_layer=wf.defaults.END_LAYER,
    )
    positive = g.add("CLIPTextEncode", (x[1], 360), "Positive prompt: describe B'", text="")
    negative = g.add(
        "CLIPTextEncode", (x[1], 560), "Negative prompt (paper)", text=wf.NEGATIVE_PROMPT
    )
    cond = g.add(
        "InpaintModelConditioning",
        (x[2], 0),
        positive=positive.out(0),
        negative=negative.out(0),
        pixels=grid.out("grid"),
        mask=grid.out("mask"),
    )
    sampler = g.add(
        "KSampler",
        (x[2], 220),
        model=apply.out("MODEL"),
        positive=cond.out(0),
        negative=cond.out(1),
        latent_image=cond.out(2),
        denoise=wf.defaults.DENOISE,
        **wf.SAMPLER,
    )
    decode = g.add("VAEDecode", (x[3], 0), samples=sampler.out(0))
    crop = g.add("AnalogistGridCrop", (x[3], 140), grid=decode.out(0), layout=grid.out("layout"))
    inner = {
        "grid": grid,
        "apply": apply,
        "positive": positive,
        "negative": negative,
        "cond": cond,
        "sampler": sampler,
        "decode": decode,
        "crop": crop,
    }
    ui = g.to_ui()
    nodes = {entry["id"]: entry for entry in ui["nodes"]}
    sampler_entry = nodes[sampler.id]
    sampler_entry["widgets_values"][1] = "randomize"  # Run twice: a new variation
    links = [
        dict(
            zip(
                ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type"),
                link,
                strict=True,
            )
        )
        for link in ui["links"]
    ]

    def new_link(origin: tuple[int, int], target: tuple[int, int], kind: str) -> int:
        link_id = len(links) + 1
        links.append(
            {
                "id": link_id,
                "origin_id": origin[0],
                "origin_slot": origin[1],
                "target_id": target[0],
                "target_slot": target[1],
                "type": kind,
            }
        )
        return link_id

    def uid(what: str) -> str:
        return str(uuid.uuid5(uuid.UUID(SUBGRAPH_ID), what))

    sg_inputs, sg_outputs = [], []
    for index, (name, kind, label, targets) in enumerate(INPUTS):
        ids = []
        for key, input_name in targets:
            entry = nodes[inner[key].id]
            sockets = [s["name"] for s in entry["inputs"]]
            if input_name not in sockets:  # a widget fed from outside: a widget socket
                entry["inputs"].append(
                    {"name": input_name, "type": kind, "widget": {"name": input_name}, "link": None}
                )
                sockets.append(input_name)
            slot = sockets.index(input_name)
            link_id = new_link((INPUT_NODE_ID, index), (entry["id"], slot), kind)
            entry["inputs"][slot]["link"] = link_id
            ids.append(link_id)
        sg_inputs.append(
            {
                "id": uid("input " + name),
                "name": name,
                "type": kind,
                "linkIds": ids,
                "localized_name": name,
                "label": label,
                "pos": [-180, 20 * index],
            }
        )
    for index, (name, kind, label, (key, slot)) in enumerate(OUTPUTS):
        entry = nodes[inner[key].id]
        link_id = new_link((entry["id"], slot), (OUTPUT_NODE_ID, index), kind)
        entry["outputs"][slot]["links"] = (entry["outputs"][slot]["links"] or []) + [link_id]
        sg_outputs.append(
            {
                "id": uid("output " + name),
                "name": name,
                "type": kind,
                "linkIds": [link_id],
                "localized_name": name,
                "label": label,
                "pos": [1960, 20 * index],
            }
        )
    definition = {
        "id": SUBGRAPH_ID,
        "version": 1,
        "state": {
            "lastGroupId": 0,
            "lastNodeId": len(ui["nodes"]),
            "lastLinkId": len(links),
            "lastRerouteId": 0,
        },
        "revision": 0,
        "config": {},
        "name": NAME,
        "inputNode": {"id": INPUT_NODE_ID, "bounding": [-300, -20, 120, 180]},
        "outputNode": {"id": OUTPUT_NODE_ID, "bounding": [1940, -20, 120, 80]},
        "inputs": sg_inputs,
        "outputs": sg_outputs,
        "widgets": [],
        "nodes": ui["nodes"],
        "groups": [],
        "links": links,
        "extra": {},
        "category": "Analogist",
        "description": DESCRIPTION,
    }
    root_id = len(ui["nodes"]) + 1
    root_inputs: list[dict[str, Any]] = []
    for name, kind, label, _ in INPUTS:
        socket: dict[str, Any] = {"label": label, "name": name, "type": kind, "link": None}
        if kind == "STRING":
            socket["widget"] = {"name": name}
        root_inputs.append(socket)
    promoted = [[key if key == "-1" else str(inner[key].id), widget] for key, widget in PROMOTED]
    root = {
        "id": root_id,
        "type": SUBGRAPH_ID,
        "pos": [0, 0],
        "size": [380, 360],
        "flags": {},
        "order": 0,
        "mode": 0,
        "inputs": root_inputs,
        "outputs": [
            {"label": label, "name": name, "type": kind, "links": None}
            for name, kind, label, _ in OUTPUTS
        ],
        "properties": {"proxyWidgets": promoted},
        "widgets_values": ["" if key == "-1" else None for key, _ in PROMOTED],
        "title": NAME,
    }
    return {
        "revision": 0,
        "last_node_id": root_id,
        "last_link_id": 0,
        "nodes": [root],
        "links": [],
        "version": 0.4,
        "definitions": {"subgraphs": [definition]},
        "extra": {},
    }


def render() -> bytes:
    return (json.dumps(blueprint(node_definitions()), indent=2) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    data = render()
    current = OUT.is_file() and OUT.read_bytes() == data
    if args.check:
        if not current:
            print(f"stale: {OUT.relative_to(ROOT)} (run scripts/build_subgraphs.py)")
        return 0 if current else 1
    if not current:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_bytes(data)
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
