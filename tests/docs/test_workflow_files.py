"""The shipped workflow files as an artist opens them (issue 22), read from the JSON alone.

No ComfyUI needed. The frontend's own checks (rendered sizes, the zoom a template opens
with, the missing-model dialog) are in tests/frontend/test_frontend_templates.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
from comfyui_analogist.analogist_cli.workflow_format import (
    CONTROL_VALUES,
    LOW_QUALITY_ZOOM,
    fit_view,
    node_bounds,
    overlapping_nodes,
)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = sorted((ROOT / "workflows").glob("*.json"))
# The frontend (1.47, missingModelDownload) offers Download only for these URL prefixes and
# file name endings; its https hosts are huggingface.co and civitai.
DOWNLOAD_HOSTS = ("huggingface.co", "civitai.com", "civitai.red")
DOWNLOAD_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")
LOADER_FOLDERS = {
    "CheckpointLoaderSimple": {"ckpt_name": "checkpoints"},
    "LoraLoader": {"lora_name": "loras"},
    "ControlNetLoader": {"control_net_name": "controlnet"},
    "CLIPVisionLoader": {"clip_name": "clip_vision"},
    "UNETLoader": {"unet_name": "diffusion_models"},
    "DualCLIPLoader": {"clip_name1": "text_encoders", "clip_name2": "text_encoders"},
    "VAELoader": {"vae_name": "vae"},
}
# The artist's own LoRA: a placeholder name, nothing to download (the note says so).
OWN_FILES = {"your_sd15_lora.safetensors"}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_no_two_nodes_overlap_title_bars_included(path):
    assert not overlapping_nodes(load(path))


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_groups_hold_every_node_but_the_note_and_do_not_overlap(path):
    workflow = load(path)
    groups = workflow["groups"]
    assert len(groups) >= 3, [g["title"] for g in groups]
    boxes = [g["bounding"] for g in groups]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not (
                a[0] < b[0] + b[2]
                and b[0] < a[0] + a[2]
                and a[1] < b[1] + b[3]
                and b[1] < a[1] + a[3]
            ), (groups[i]["title"], a, b)
    for node in workflow["nodes"]:
        if node["type"] == "MarkdownNote":
            continue
        x0, y0, x1, y1 = node_bounds(node)
        inside = [
            g["title"]
            for g in groups
            if g["bounding"][0] <= x0
            and x1 <= g["bounding"][0] + g["bounding"][2]
            and g["bounding"][1] + 30 <= y0  # below the group's title band
            and y1 <= g["bounding"][1] + g["bounding"][3]
        ]
        assert len(inside) == 1, f"node {node['id']} {node['type']} in groups {inside}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_opens_readable_the_saved_view_is_the_frontends_fit_view(path):
    workflow = load(path)
    boxes = [node_bounds(n) for n in workflow["nodes"]]
    bounds = (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
    view = fit_view(bounds)
    assert view["scale"] >= LOW_QUALITY_ZOOM, f"fit view opens at {view['scale']:.2f}"
    assert workflow["extra"]["ds"] == view


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_every_loader_offers_a_download_for_the_file_it_names(path):
    problems = []
    for node in load(path)["nodes"]:
        widgets = LOADER_FOLDERS.get(node["type"])
        if widgets is None:
            continue
        models = node.get("properties", {}).get("models") or []
        by_name = {m["name"]: m for m in models}
        named = [
            v
            for v in node["widgets_values"]
            if isinstance(v, str) and v.endswith(DOWNLOAD_SUFFIXES)
        ]
        for name, folder in zip(named, widgets.values(), strict=False):
            if name in OWN_FILES:
                continue
            model = by_name.get(name)
            where = f"node {node['id']} {node['type']} {name}"
            if model is None:
                problems.append(f"{where}: no properties.models entry")
                continue
            url = urlparse(model["url"])
            if url.scheme != "https" or url.hostname not in DOWNLOAD_HOSTS:
                problems.append(f"{where}: {model['url']} is not an https URL the frontend offers")
            if not model["name"].endswith(DOWNLOAD_SUFFIXES):
                problems.append(f"{where}: the frontend offers no download for this file type")
            if model["directory"] != folder:
                problems.append(
                    f"{where}: directory {model['directory']!r}, the loader reads {folder!r}"
                )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_samplers_randomize_their_seed_and_the_note_names_the_papers(path):
    workflow = load(path)
    samplers = [n for n in workflow["nodes"] if n["type"] in ("KSampler", "SamplerCustom")]
    for node in samplers:
        controls = [v for v in node["widgets_values"] if v in CONTROL_VALUES]
        assert controls == ["randomize"], (node["type"], node["widgets_values"])
    (note,) = [n for n in workflow["nodes"] if n["type"] == "MarkdownNote"]
    if samplers:
        assert re.search(r"paper's seed is \*\*\d+\*\*", note["widgets_values"][0])


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_note_is_markdown_with_links_and_no_literal_asterisks(path):
    (note,) = [n for n in load(path)["nodes"] if n["type"] == "MarkdownNote"]
    text = note["widgets_values"][0]
    assert text.startswith("## ")
    assert re.search(r"\]\(https://", text)
    # Asterisks only as markdown emphasis: **bold**, and no stray single ones.
    stray = re.sub(r"\*\*[^*\n]+\*\*", "", text)
    assert "*" not in stray, [line for line in stray.splitlines() if "*" in line]
    assert "<R>" not in text.replace("`<R>`", "")  # an HTML tag to a markdown renderer
