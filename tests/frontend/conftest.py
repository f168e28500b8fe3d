"""Fixtures for the browser tests: one ComfyUI server and one Chromium per session.

The server is the current host (ANALOGIST_COMFYUI_HOST) serving the frontend it pins,
with the pack linked into custom_nodes (which puts the example images in input/), the random SD1.5
inpainting checkpoint, and empty stand-ins named like the models the shipped workflows
name (an artist who followed the workflow's note has them; only the run tests load a
model, and they pick the random checkpoint).

Screenshots: each test's page keeps the screenshots it took (one per loaded graph)
under ``$ANALOGIST_FRONTEND_ARTIFACTS`` (else pytest's tmp path) when the test fails,
and lists them in the report; a passing test leaves none behind.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest
from support.comfy_server import ComfyServer, make_workspace
from support.frontend import VIEWPORT, Frontend, launch, why_no_browser

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "workflows"


def named_models() -> dict[str, set[str]]:
    """Models the shipped workflows name, by models/ folder (their loaders' download links),
    and the artist's own LoRA the LoRA workflow names."""
    out: dict[str, set[str]] = {"loras": {"your_sd15_lora.safetensors"}}
    for path in WORKFLOWS.glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            for model in (node.get("properties") or {}).get("models") or []:
                out.setdefault(model["directory"], set()).add(model["name"])
    return out


# Stand-ins (listed, never loaded): an artist who followed the notes has these files.
NAMED_MODELS = named_models()

_WHY_NOT = why_no_browser()


@pytest.fixture(scope="session", autouse=True)
def _browser_available():
    if _WHY_NOT:
        pytest.skip(_WHY_NOT)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session")
def chat():
    from support.chat_server import ChatServer

    server = ChatServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def frontend_server(tmp_path_factory, sd15_checkpoint):
    workspace = make_workspace(
        tmp_path_factory.mktemp("comfyui-frontend"), models={"checkpoints": [sd15_checkpoint]}
    )
    for folder, names in NAMED_MODELS.items():
        (workspace / "models" / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (workspace / "models" / folder / name).touch()
    # The example images: the pack copies them into input/ when it loads.
    server = ComfyServer(workspace).start()
    # A returning user: no first-run template gallery over the canvas.
    request = urllib.request.Request(
        server.url + "/settings",
        data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).read()
    server.info = server.object_info()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def frontend(request, browser, frontend_server, tmp_path):
    """A fresh page on the frontend, opened and ready for a workflow."""
    artifacts = Path(os.environ.get("ANALOGIST_FRONTEND_ARTIFACTS") or tmp_path / "screenshots")
    artifacts = (
        artifacts / request.node.name
        if os.environ.get("ANALOGIST_FRONTEND_ARTIFACTS")
        else artifacts
    )
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    ui = Frontend(page, frontend_server.url, artifacts).open()
    yield ui
    failed = any(
        getattr(request.node, f"report_{when}", None) is not None
        and getattr(request.node, f"report_{when}").failed
        for when in ("setup", "call")
    )
    if failed:
        try:
            ui.screenshot("at-failure")
        except Exception as error:  # the page may be gone; the earlier shots still count
            print(f"no screenshot at failure: {error}")
        print("frontend screenshots kept:\n" + "\n".join(f"  {p}" for p in ui.screenshots))
        print(
            "browser console:\n"
            + "\n".join(f"  [{k}] {t[:300]} {u}" for k, t, u in ui.console.messages)
        )
    else:
        for shot in ui.screenshots:
            shot.unlink(missing_ok=True)
    context.close()
