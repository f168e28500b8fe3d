"""Every shipped workflow opened from the frontend's Templates browser, as a new user does.

A fresh install (issue 22): a workspace with this pack and nothing else: no models, no
pictures in ``input/`` (the pack copies its examples there when it loads). The user clicks
**Templates** in the left sidebar, the pack's entry under Extensions, then the template's
card. What the frontend then shows is checked: it opens at a zoom where nodes are drawn
with their text, no two nodes overlap (their boxes as drawn, title bars included), the
groups are there, the start (the note and the pictures) is in view, every Load Image
shows its picture, and the missing-model panel offers a Download for each model file.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from comfyui_analogist.analogist_cli.workflow_format import LOW_QUALITY_ZOOM
from support.comfy_server import PACK_DIR_NAME, ComfyServer, make_workspace
from support.frontend import VIEWPORT, Frontend

pytestmark = [pytest.mark.frontend, pytest.mark.host]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_FILES = sorted((ROOT / "workflows").glob("*.json"))


@pytest.fixture(scope="module")
def fresh_install(tmp_path_factory):
    workspace = make_workspace(tmp_path_factory.mktemp("comfyui-fresh-install"))
    server = ComfyServer(workspace).start()
    request = urllib.request.Request(  # no first-run template gallery over the canvas
        server.url + "/settings",
        data=json.dumps({"Comfy.TutorialCompleted": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).read()
    yield server
    server.stop()


@pytest.fixture
def page_on_fresh_install(browser, fresh_install, tmp_path):
    context = browser.new_context(viewport=VIEWPORT)
    ui = Frontend(context.new_page(), fresh_install.url, tmp_path / "screenshots").open()
    yield ui
    context.close()


def open_from_templates(ui: Frontend, name: str, node_count: int) -> None:
    page = ui.page
    page.get_by_role("button", name="Templates").first.click()
    page.get_by_text(PACK_DIR_NAME, exact=True).first.click()
    page.get_by_text(name, exact=True).first.click()
    page.wait_for_function(
        "(n) => app.rootGraph.nodes.length === n && !document.querySelector('.p-blockui-mask')",
        arg=node_count,
        timeout=60_000,
    )
    page.wait_for_timeout(1500)  # images load, the missing-model scan reports


def drawn_overlaps(ui: Frontend) -> list[str]:
    return ui.page.evaluate(
        """() => {
            const h = LiteGraph.NODE_TITLE_HEIGHT, nodes = app.rootGraph._nodes;
            const box = n => [n.pos[0], n.pos[1] - h, n.pos[0] + n.size[0], n.pos[1] + n.size[1]];
            const out = [];
            for (let i = 0; i < nodes.length; i++) for (let j = i + 1; j < nodes.length; j++) {
                const [a, b] = [box(nodes[i]), box(nodes[j])];
                if (a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3])
                    out.push(`${nodes[i].title} [${a.map(Math.round)}] / ${nodes[j].title} [${b.map(Math.round)}]`);
            }
            return out;
        }"""
    )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.stem)
def test_template_opens_readable_with_pictures_and_download_links(page_on_fresh_install, path):
    ui = page_on_fresh_install
    saved = json.loads(path.read_text())
    open_from_templates(ui, path.stem, len(saved["nodes"]))
    shot = ui.screenshot(f"{path.stem}-from-templates")
    see = f"\n(screenshot: {shot})"

    scale = ui.view()["scale"]
    assert scale >= LOW_QUALITY_ZOOM, (
        f"{path.name} opens at {scale:.0%}: below {LOW_QUALITY_ZOOM:.0%} nodes are drawn without text{see}"
    )
    overlaps = drawn_overlaps(ui)
    assert not overlaps, f"{path.name}: nodes overlap as drawn:\n" + "\n".join(overlaps) + see
    groups = ui.page.evaluate("() => app.rootGraph._groups.map(g => g.title)")
    assert groups == [g["title"] for g in saved["groups"]] and len(groups) >= 3, groups

    # The example pictures: the pack put them into input/, Load Image shows them.
    pictures = ui.page.evaluate(
        """() => app.rootGraph.nodes.filter(n => n.type === 'LoadImage').map(n => [
            n.title, n.widgets.find(w => w.name === 'image').value,
            (n.imgs ?? []).filter(i => i.complete && i.naturalWidth > 0).length])"""
    )
    missing = [f"{title}: {image}" for title, image, shown in pictures if not shown]
    assert not missing, f"{path.name}: Load Image shows no picture for {missing}{see}"

    # No model is installed: the missing-model panel offers a download for each named file.
    models = {
        m["name"] for n in saved["nodes"] for m in (n.get("properties") or {}).get("models") or []
    }
    if models:
        ui.page.get_by_role("button", name="View details").first.click()
        panel = ui.page.get_by_test_id("properties-panel")
        panel.get_by_text("Missing Models").first.wait_for(timeout=30_000)
        ui.page.wait_for_timeout(500)
        text = panel.inner_text()
        shot = ui.screenshot(f"{path.stem}-missing-models")
        absent = [m for m in models if m not in text]
        assert not absent, (
            f"{path.name}: the missing-model panel does not list {absent}\n(screenshot: {shot})"
        )
        downloads = panel.evaluate(
            "(el) => [...el.querySelectorAll('button')].filter(b => b.innerText.trim() === 'Download').length"
        )
        assert downloads == len(models), (
            f"{path.name}: {downloads} Download buttons for {sorted(models)}\n(screenshot: {shot})"
        )
        # Read, the panel is closed again (the notice went when its details were opened).
        ui.page.get_by_role("button", name="Toggle properties panel").first.click()
        ui.page.wait_for_timeout(500)

    # The start: the note and the first group's nodes are on screen, clear of the menus.
    start_ids = {n["id"] for n in saved["nodes"] if n["type"] == "MarkdownNote"}
    first = saved["groups"][0]["bounding"]
    start_ids |= {
        n["id"]
        for n in saved["nodes"]
        if first[0] <= n["pos"][0] < first[0] + first[2]
        and first[1] <= n["pos"][1] < first[1] + first[3]
    }
    shot = ui.screenshot(f"{path.stem}-start")
    covered = [c for c in ui.covered_titles() if int(c.split()[1]) in start_ids]
    assert not covered, (
        f"{path.name}: the start is not in view:\n" + "\n".join(covered) + f"\n(screenshot: {shot})"
    )
