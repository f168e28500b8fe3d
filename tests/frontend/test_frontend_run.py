"""Shipped workflows queued from the real frontend with its Run button.

Dropped in as an artist does, then only what an artist with this test's models would
change: the checkpoint widget set to the random SD1.5 inpainting checkpoint, 1 sampling
step and 64-pixel cells (a CPU run), the GPT-4V node's base_url set to a local
OpenAI-compatible server. The frontend turns the graph into the prompt (graphToPrompt)
and queues it; the server runs it; the result must show up in the page.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.sd15 import checkpoint_name

pytestmark = [pytest.mark.frontend, pytest.mark.host, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"
RUN_TIMEOUT_S = 1800.0  # one SD1.5 step on a busy 2-core CPU has taken 3 minutes
CELL = 64


def small_settings(frontend) -> None:
    assert frontend.set_widget("CheckpointLoaderSimple", "ckpt_name", checkpoint_name(0)) == 1
    assert frontend.set_widget("KSampler", "steps", 1) == 1
    assert frontend.set_widget("AnalogistGridCompose", "cell_width", CELL) == 1
    assert frontend.set_widget("AnalogistGridCompose", "cell_height", CELL) == 1


def run_from_ui(frontend, server, label: str) -> dict:
    """Click Run; wait for the server to finish the prompt; return its history entry."""
    status, body = frontend.click_run()
    shot = frontend.screenshot(f"{label}-queued")
    # Outputs whose inputs fail validation are dropped from an accepted prompt: the
    # server names them in node_errors, and the rest runs without them.
    assert status == 200 and body.get("prompt_id") and not body.get("node_errors"), (
        f"the server refused (part of) the prompt the frontend queued ({status}): {body}\n(screenshot: {shot})"
    )
    prompt_id = body["prompt_id"]
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            entry = server.get_json(f"/history/{prompt_id}", timeout=120).get(prompt_id)
        except (TimeoutError, OSError):  # a server busy sampling on a loaded CPU answers late
            entry = None
        if entry and entry.get("status", {}).get("completed") is not None:
            assert entry["status"]["status_str"] == "success", (
                f"the run failed: {entry['status'].get('messages')}\n{server.log_tail()}"
            )
            return entry
        time.sleep(1.0)
    raise AssertionError(
        f"prompt {prompt_id} did not finish in {RUN_TIMEOUT_S:.0f} s\n{server.log_tail()}"
    )


def node_id(entry: dict, class_type: str) -> str:
    (found,) = [k for k, v in entry["prompt"][2].items() if v["class_type"] == class_type]
    return found


def test_manual_prompt_workflow_queued_with_run_button_shows_its_image(frontend, frontend_server):
    frontend.drop_workflow(WORKFLOWS / "analogist_manual_prompt.json")
    small_settings(frontend)

    entry = run_from_ui(frontend, frontend_server, "manual-prompt")

    save = node_id(entry, "SaveImage")
    (image,) = entry["outputs"][save]["images"]
    picture = Image.open(io.BytesIO(frontend_server.view(image)))
    assert picture.size == (256, 256)  # B's own size, restored by Grid Crop
    # The queued prompt carries the shipped settings the test did not change.
    inputs = entry["prompt"][2][node_id(entry, "KSampler")]["inputs"]
    assert (inputs["cfg"], inputs["sampler_name"], inputs["denoise"], inputs["steps"]) == (
        15.0,
        "ddim",
        0.98,
        1,
    )
    # The page got the result for the Save Image node and fetched the image to draw it.
    shown = frontend.wait_for(
        "(id) => (app.nodeOutputs?.[id]?.images ?? []).map(i => i.filename).join(',') || null",
        arg=save,
        timeout_s=120,
    )
    assert image["filename"] in shown.split(","), shown
    frontend.page.wait_for_timeout(1000)
    assert any(f"filename={image['filename']}" in url for url in frontend.images_fetched), (
        frontend.images_fetched
    )
    frontend.screenshot("manual-prompt-done")


def test_gpt4v_node_run_against_a_local_server_shows_the_returned_prompt(
    frontend, frontend_server, chat
):
    frontend.drop_workflow(WORKFLOWS / "analogist.json")
    small_settings(frontend)
    assert frontend.set_widget("AnalogistGPT4VPrompt", "base_url", chat.base_url) == 1
    chat.default_text = "a pencil sketch of triangle"  # max_words is 5
    before = chat.count

    entry = run_from_ui(frontend, frontend_server, "gpt4v")

    assert chat.count == before + 1, "the node did not ask the local server"
    vlm = node_id(entry, "AnalogistGPT4VPrompt")
    expected = "a pencil sketch of triangle, best quality, extremely detailed"
    assert entry["outputs"][vlm]["text"] == [expected]
    # The pack's web extension puts the answer on the node, in a visible read-only box...
    shown = frontend.wait_for(
        """([id, text]) => {
            const node = app.rootGraph.getNodeById(id);
            const w = node?.widgets?.find(w => w.name === 'vlm_answer');
            if (!w || w.value !== text) return null;
            const box = w.inputEl ?? w.element;
            const rect = box?.getBoundingClientRect();
            return {value: w.value, readOnly: !!box?.readOnly, visible: !!rect && rect.width > 0 && rect.height > 0,
                    boxText: box?.value ?? null};
        }""",
        arg=[vlm, expected],
        timeout_s=60,
    )
    shot = frontend.screenshot("gpt4v-done")
    assert shown == {"value": expected, "readOnly": True, "visible": True, "boxText": expected}, (
        f"{shown} ({shot})"
    )
    # ...that is never saved: not in the workflow, not in the prompt the frontend queues.
    saved, queued = frontend.page.evaluate(
        """async (id) => {
            const node = app.rootGraph.getNodeById(id);
            const p = await app.graphToPrompt();
            return [node.serialize().widgets_values, p.output[id].inputs];
        }""",
        vlm,
    )
    assert expected not in saved and "vlm_answer" not in queued, (saved, queued)
    # ...and that comes back with its workflow tab (issue 22: it vanished after a switch).
    frontend.page.evaluate("() => app.extensionManager.command.execute('Comfy.NewBlankWorkflow')")
    frontend.wait_for("() => (app.rootGraph.nodes.length === 0) || null", timeout_s=60)
    frontend.page.evaluate(
        "() => app.extensionManager.command.execute('Workspace.PreviousOpenedWorkflow')"
    )
    back = frontend.wait_for(
        """([id, text]) => {
            const node = app.rootGraph.getNodeById(id);
            const w = node?.widgets?.find(w => w.name === 'vlm_answer');
            return w && w.value === text ? (w.inputEl ?? w.element)?.value ?? null : null;
        }""",
        arg=[vlm, expected],
        timeout_s=60,
    )
    assert back == expected, f"{back} ({frontend.screenshot('gpt4v-tab-back')})"
    assert not frontend.console.from_pack(), frontend.console.from_pack()


def test_run_twice_gives_a_new_variation_not_the_cached_picture(frontend, frontend_server):
    """The shipped sampler randomizes its seed after each run (issue 22): the second Run
    samples again with another seed instead of returning the first picture from the cache."""
    frontend.drop_workflow(WORKFLOWS / "analogist_manual_prompt.json")
    small_settings(frontend)

    first = run_from_ui(frontend, frontend_server, "run-1")
    second = run_from_ui(frontend, frontend_server, "run-2")

    sampler = node_id(first, "KSampler")
    seeds = [entry["prompt"][2][sampler]["inputs"]["seed"] for entry in (first, second)]
    assert seeds[0] == 0, "the first run uses the saved (paper's) seed"
    assert seeds[1] != seeds[0], f"the seed did not change after the run: {seeds}"
    cached = [
        data.get("nodes", [])
        for kind, data, *_ in second["status"]["messages"]
        if kind == "execution_cached"
    ]
    assert not any(sampler in nodes for nodes in cached), cached
    save = node_id(first, "SaveImage")
    pictures = [
        np.asarray(
            Image.open(io.BytesIO(frontend_server.view(e["outputs"][save]["images"][0]))), np.int16
        )
        for e in (first, second)
    ]
    assert np.abs(pictures[0] - pictures[1]).max() > 0, "the second run gave the same picture"
