"""From a shipped UI workflow to the API prompt of one job: the user's images, prompt and
options set on the graph's own nodes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .inputs import InputError, Settings
from .workflow_format import nodes_of_type, set_widget, ui_to_api

PACK_ROOT = Path(__file__).resolve().parents[1]


WORKFLOW_FILES = {
    "manual": PACK_ROOT / "workflows" / "analogist_manual_prompt.json",
    "vlm": PACK_ROOT / "workflows" / "analogist.json",
}


# ``--candidates N``: the typed-prompt graph sampling N B' and keeping the best by CLIP.
BEST_OF_N_FILE = PACK_ROOT / "workflows" / "analogist_best_of_n.json"


# -- the graph -----------------------------------------------------------------------------
def load_workflow(kind: str, candidates: int | None = None) -> dict:
    if kind not in WORKFLOW_FILES:
        raise InputError(f"--workflow must be one of {sorted(WORKFLOW_FILES)}, got {kind!r}")
    if candidates is not None:
        return json.loads(BEST_OF_N_FILE.read_text())
    return json.loads(WORKFLOW_FILES[kind].read_text())


def set_candidates(workflow: dict, settings: Settings, info: dict) -> None:
    """The best-of-N graph: sample ``settings.candidates`` B' and score them with the
    given CLIP vision model."""
    (repeat,) = nodes_of_type(workflow, "RepeatLatentBatch")
    set_widget(workflow, repeat["id"], "amount", settings.candidates, info)
    repeat["title"] = f"{settings.candidates} candidates"
    for node in nodes_of_type(workflow, "SaveImage"):
        node["title"] = re.sub(
            r"best of \d+", f"best of {settings.candidates}", node.get("title", "")
        )
    (loader,) = nodes_of_type(workflow, "CLIPVisionLoader")
    set_widget(workflow, loader["id"], "clip_name", settings.clip_vision, info)


def build_prompt(settings: Settings, info: dict, images: dict[str, str]) -> dict:
    """The API prompt for one B: the shipped workflow with the user's inputs and options."""
    workflow = load_workflow(settings.workflow, settings.candidates)
    if settings.candidates is not None:
        set_candidates(workflow, settings, info)
    titles = {"A (example, before)": "a", "A' (example, after)": "a_prime", "B (to change)": "b"}
    for node in nodes_of_type(workflow, "LoadImage"):
        set_widget(workflow, node["id"], "image", images[titles[node["title"]]], info)
    for node in nodes_of_type(workflow, "CheckpointLoaderSimple"):
        set_widget(workflow, node["id"], "ckpt_name", settings.checkpoint, info)
    if settings.prompt is not None:
        if settings.workflow != "manual":
            raise InputError("--prompt goes with --workflow manual (the vlm workflow asks a model)")
        (positive,) = [
            n
            for n in nodes_of_type(workflow, "CLIPTextEncode")
            if n.get("title", "").startswith("Positive")
        ]
        set_widget(workflow, positive["id"], "text", settings.prompt, info)
    for node in nodes_of_type(workflow, "AnalogistGridCompose"):
        if settings.cell is not None:
            set_widget(workflow, node["id"], "cell_width", settings.cell, info)
            set_widget(workflow, node["id"], "cell_height", settings.cell, info)
    for node in nodes_of_type(workflow, "KSampler"):
        for name in ("steps", "seed", "denoise"):
            value = getattr(settings, name)
            if value is not None:
                set_widget(workflow, node["id"], name, value, info)
    for node in nodes_of_type(workflow, "AnalogistGPT4VPrompt"):
        if settings.vlm_base_url is not None:
            set_widget(workflow, node["id"], "base_url", settings.vlm_base_url, info)
        if settings.vlm_model is not None:
            set_widget(workflow, node["id"], "model", settings.vlm_model, info)
    prompt = add_example_pairs(ui_to_api(workflow, info), settings, images)
    return with_b_region(prompt, images.get("b_region"))


def with_b_region(prompt: dict, image: str | None) -> dict:
    """The API prompt with the uploaded region mask (its red channel: white = may change)
    on every Grid Compose's ``b_region``; unchanged without one."""
    if image is None:
        return prompt
    composers = [
        key for key, node in prompt.items() if node["class_type"] == "AnalogistGridCompose"
    ]
    if not composers:
        raise InputError(
            "--b-region: this workflow has no Analogist Grid Compose to take the region"
        )
    node_id = str(max(int(key) for key in prompt if str(key).isdigit()) + 1)
    prompt[node_id] = {
        "class_type": "LoadImageMask",
        "inputs": {"image": image, "channel": "red"},
        "_meta": {"title": "B's region (--b-region)"},
    }
    for key in composers:
        prompt[key]["inputs"]["b_region"] = [node_id, 0]
    return prompt


def add_example_pairs(prompt: dict, settings: Settings, images: dict[str, str]) -> dict:
    """The API prompt with pairs 2..K: a LoadImage per image, an Analogist Example Pair
    chain into Grid Compose's ``examples``, and Grid Compose's layout into the GPT-4V
    node (so its request names every pair). Unchanged without --example."""
    if not settings.examples:
        return prompt
    (compose_id,) = [i for i, n in prompt.items() if n["class_type"] == "AnalogistGridCompose"]
    (load_a,) = [
        n
        for i, n in prompt.items()
        if n["class_type"] == "LoadImage" and prompt[compose_id]["inputs"].get("a") == [i, 0]
    ]
    next_id = max(int(i) for i in prompt) + 1
    chain = None
    for k in range(2, len(settings.examples) + 2):
        loads = []
        for role in (f"a{k}", f"a{k}_prime"):
            prompt[str(next_id)] = {
                "class_type": "LoadImage",
                "inputs": {**load_a["inputs"], "image": images[role]},
                "_meta": {
                    "title": f"A{k}{chr(39) if role.endswith('prime') else ''} (example {k})"
                },
            }
            loads.append([str(next_id), 0])
            next_id += 1
        inputs = {"a": loads[0], "a_prime": loads[1]}
        if chain is not None:
            inputs["examples"] = chain
        prompt[str(next_id)] = {
            "class_type": "AnalogistExamplePair",
            "inputs": inputs,
            "_meta": {"title": f"Example pair {k}"},
        }
        chain = [str(next_id), 0]
        next_id += 1
    prompt[compose_id]["inputs"]["examples"] = chain
    for node in prompt.values():
        if node["class_type"] == "AnalogistGPT4VPrompt":
            node["inputs"]["layout"] = [compose_id, 3]
    return prompt
