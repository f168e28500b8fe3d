"""The pack's per-node help pages in ComfyUI's real node help panel.

ComfyUI 0.30.0's frontend (1.47) loads a custom node's help from
``/extensions/<pack folder>/docs/<NodeId>/<locale>.md``, then ``.../docs/<NodeId>.md``;
the server serves ``/extensions/<pack folder>/`` from the pack's ``WEB_DIRECTORY``
(``web/``). These tests check both halves: the server hands out every node's page, and
the panel an artist opens (Node Library, a node's "Learn more" button) shows our text.
"""

from __future__ import annotations

import json
import urllib.request

import pytest
from comfyui_analogist import nodes
from support.frontend import PACK_URL_PART
from support.node_help import artist_part, help_builder, plain_words

pytestmark = [pytest.mark.frontend, pytest.mark.host]


PANEL_SETTING = "Comfy.RightSidePanel.IsOpen"  # kept by the server, for every later page


def _set_setting(base_url: str, name: str, value) -> None:
    request = urllib.request.Request(
        f"{base_url}/settings/{name}",
        data=json.dumps(value).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).read()


@pytest.fixture
def panel_closed_afterwards(frontend_server):
    """Opening the properties panel saves that in the server's user settings, and every
    later test's page would open with it covering the right of the canvas: close it again."""
    yield
    _set_setting(frontend_server.url, PANEL_SETTING, False)
    status, _, text = _fetch(f"{frontend_server.url}/settings/{PANEL_SETTING}")
    assert status == 200 and json.loads(text) is False


def _fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.status, answer.headers.get("Content-Type", ""), answer.read().decode()


def test_server_serves_every_nodes_page_where_the_panel_looks(frontend_server):
    listed = {name for name, info in frontend_server.info.items() if name.startswith("Analogist")}
    assert listed == set(nodes.NODE_CLASS_MAPPINGS), (
        "the server lists other nodes than the pack registers"
    )
    for node_id in sorted(listed):
        module = frontend_server.info[node_id]["python_module"]
        folder = module.split(".")[1]  # the frontend's extractCustomNodeName
        assert f"/extensions/{folder}/" == PACK_URL_PART, module
        status, kind, text = _fetch(f"{frontend_server.url}/extensions/{folder}/docs/{node_id}.md")
        assert status == 200 and "text/html" not in kind, (node_id, status, kind)
        assert text == help_builder().page_path(node_id).read_text(encoding="utf-8"), node_id


def _first_paragraph(node_id: str) -> str:
    """The artist's opening paragraph, as words (what the rendered page must show)."""
    top = artist_part(help_builder().page_path(node_id).read_text(encoding="utf-8"))
    return plain_words(top.split("\n\n")[1])


def test_node_help_panel_shows_our_page_for_every_node(frontend, panel_closed_afterwards):
    """Select each node on the canvas, open the properties panel's Info tab (ComfyUI's node
    help panel): it shows our page, fetched from the pack, not the frontend's fallback."""
    page = frontend.page
    page.set_default_timeout(15_000)
    fetched: list[str] = []
    page.on("response", lambda r: fetched.append(r.url) if "/docs/" in r.url and r.ok else None)
    page.get_by_role("button", name="Toggle properties panel").first.click()
    for node_id in sorted(nodes.NODE_CLASS_MAPPINGS):
        page.evaluate(
            """(type) => {
                const node = LiteGraph.createNode(type);
                node.pos = [200, 200];
                app.rootGraph.add(node);
                app.canvas.deselectAll();
                app.canvas.selectNode(node);
            }""",
            node_id,
        )
        page.get_by_role("tab", name="Info").first.click()
        wanted = _first_paragraph(node_id)
        try:
            page.wait_for_function(
                """(wanted) => [...document.querySelectorAll('.markdown-content')].some(
                    e => e.innerText.split(/\\s+/).join(' ').includes(wanted))""",
                arg=wanted,
                timeout=15_000,
            )
        except Exception:
            frontend.screenshot(f"help-{node_id}")
            shown = page.evaluate(
                "() => [...document.querySelectorAll('.markdown-content')].map(e => e.innerText)"
            )
            raise AssertionError(
                f"{node_id}: the help panel shows {shown!r}, not {wanted!r}"
            ) from None
        shown = " ".join(
            page.evaluate(
                "() => [...document.querySelectorAll('.markdown-content')].map(e => e.innerText)"
            )
        )
        # The whole page: the generated part (a tooltip) renders too, the markers do not.
        output_tip = " ".join(nodes.NODE_CLASS_MAPPINGS[node_id].OUTPUT_TOOLTIPS[0].split())
        assert output_tip in " ".join(shown.split()), f"{node_id}: the outputs part is not shown"
        assert "scripts/build_node_help.py" not in shown, "the generated-part marker shows"
        assert any(url.endswith(f"/docs/{node_id}.md") and PACK_URL_PART in url for url in fetched)
    frontend.screenshot("help-panel")
