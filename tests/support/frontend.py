"""Drive ComfyUI's real frontend (the one the host pins) in headless Chromium.

The browser is Debian's ``chromium`` (``/usr/bin/chromium``, or ``ANALOGIST_CHROMIUM``)
driven by the Python ``playwright`` package through ``executable_path``; playwright's own
browser download is not needed. The page talks only to the local ComfyUI server: every
other request is refused (the frontend asks api.comfy.org and huggingface.co for news and
template models, which a closed network answers with errors that are not ours).

Workflows go in the way an artist drags them in: a ``drop`` event carrying the file is
dispatched on the graph canvas, handled by the frontend's own drop handler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these, Chromium's own background fetches fail on a closed network and
    # take the local connections down with them.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1920, "height": 1080}
PACK_URL_PART = "/extensions/comfyui-analogist/"


def chromium_path() -> str | None:
    path = os.environ.get("ANALOGIST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return path if Path(path).is_file() and os.access(path, os.X_OK) else None


def why_no_browser() -> str | None:
    """None when the browser tests can run here, else the reason they cannot."""
    if not os.environ.get("ANALOGIST_COMFYUI_HOST"):
        return (
            "frontend tests run on the current host only: ANALOGIST_COMFYUI_HOST is unset "
            "(the 2024 host's frontend is not the one artists use)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the Python package playwright is not installed (tests/requirements-test.txt)"
    if chromium_path() is None:
        return "no Chromium: install Debian's `chromium` (apt-get install chromium) or set ANALOGIST_CHROMIUM"
    try:
        import comfyui_frontend_package  # noqa: F401
    except ImportError:
        return (
            "comfyui-frontend-package (the frontend ComfyUI pins) is not installed in this Python"
        )
    return None


def launch(playwright):
    return playwright.chromium.launch(
        executable_path=chromium_path(), args=CHROMIUM_FLAGS, headless=True
    )


@dataclass
class Console:
    """What the page logged: console messages and uncaught errors, with their source URL."""

    messages: list[tuple[str, str, str]] = field(default_factory=list)  # (type, text, url)

    def add(self, kind: str, text: str, url: str = "") -> None:
        self.messages.append((kind, text, url or ""))

    def from_pack(
        self, kinds: tuple[str, ...] = ("error", "pageerror", "warning")
    ) -> list[tuple[str, str, str]]:
        """Messages of these kinds that come from the pack (its files, or naming it)."""
        return [
            m
            for m in self.messages
            if m[0] in kinds
            and (PACK_URL_PART in m[2] or PACK_URL_PART in m[1] or "analogist" in m[1].lower())
        ]

    def internal_module_notices(self) -> list[str]:
        """The frontend's notices about extensions importing its internal modules."""
        return [m[1] for m in self.messages if "is an internal module" in m[1]]


class Frontend:
    """One browser page on the ComfyUI server's frontend."""

    def __init__(self, page, base_url: str, artifacts: Path):
        self.page = page
        self.base_url = base_url
        self.artifacts = artifacts
        self.console = Console()
        self.screenshots: list[Path] = []
        self.images_fetched: list[str] = []  # /view URLs the page loaded (images it shows)
        page.on("response", self._note_image)
        page.on(
            "console", lambda m: self.console.add(m.type, m.text, (m.location or {}).get("url", ""))
        )
        page.on(
            "pageerror", lambda e: self.console.add("pageerror", f"{e}\n{getattr(e, 'stack', '')}")
        )
        page.route("**/*", self._only_local)

    def _note_image(self, response) -> None:
        if (
            "/view?" in response.url
            and response.ok
            and response.headers.get("content-type", "").startswith("image/")
        ):
            self.images_fetched.append(response.url)

    def _only_local(self, route) -> None:
        if route.request.url.startswith(self.base_url) or route.request.url.startswith("data:"):
            route.continue_()
        else:
            route.abort()

    # -- set-up -----------------------------------------------------------------------
    def open(self, timeout_ms: int = 180_000) -> Frontend:
        self.page.goto(self.base_url + "/", timeout=timeout_ms)
        # Ready: the canvas has its graph, the extensions are in, and the start-up load
        # (the restored or default workflow) no longer masks the canvas.
        self.page.wait_for_function(
            "() => window.LiteGraph && window.app?.canvas?.graph && document.querySelector('#graph-canvas')"
            " && (app.extensions ?? []).length > 0 && !document.querySelector('.p-blockui-mask')",
            timeout=timeout_ms,
        )
        self.page.wait_for_timeout(1000)
        return self

    def extension_names(self) -> list[str]:
        return self.page.evaluate("() => (app.extensions ?? []).map(e => e.name)")

    # -- workflows --------------------------------------------------------------------
    def drop_workflow(self, path: Path, timeout_ms: int = 60_000) -> None:
        """Drop the file on the canvas as a user does, and wait until its graph is there."""
        workflow = json.loads(path.read_text())
        self.page.evaluate(
            """([text, name]) => {
                const data = new DataTransfer();
                data.items.add(new File([text], name, {type: 'application/json'}));
                const canvas = document.querySelector('#graph-canvas');
                const at = {dataTransfer: data, bubbles: true, cancelable: true, clientX: 960, clientY: 540};
                canvas.dispatchEvent(new DragEvent('dragenter', at));
                canvas.dispatchEvent(new DragEvent('dragover', at));
                canvas.dispatchEvent(new DragEvent('drop', at));
            }""",
            [path.read_text(), path.name],
        )
        ids = sorted(str(n["id"]) for n in workflow["nodes"])
        self.page.wait_for_function(
            "(ids) => JSON.stringify(app.rootGraph.nodes.map(n => String(n.id)).sort()) === JSON.stringify(ids)",
            arg=ids,
            timeout=timeout_ms,
        )
        # The frontend masks the canvas (PrimeVue BlockUI) while it settles the new graph.
        self.page.wait_for_function(
            "() => !document.querySelector('.p-blockui-mask')", timeout=timeout_ms
        )
        self.page.wait_for_timeout(500)  # toasts and dialogs of the load come up

    def nodes(self) -> list[dict[str, Any]]:
        """Every node of the loaded graph: type, whether the type is known, widgets, serialized values."""
        return self.page.evaluate(
            """() => {
                const plain = (v) => (typeof v === 'number' && !Number.isFinite(v)) ? String(v) : v;
                return app.rootGraph.nodes.map(n => ({
                    id: String(n.id),
                    type: n.type,
                    registered: !!LiteGraph.registered_node_types[n.type],
                    has_errors: !!n.has_errors,
                    widgets: (n.widgets ?? []).map(w => ({name: w.name, type: w.type, value: plain(w.value)})),
                    saved: (n.serialize().widgets_values ?? null)?.map?.(plain) ?? null,
                    title_box: (() => {
                        const ds = app.canvas.ds, h = LiteGraph.NODE_TITLE_HEIGHT;
                        const x = (n.pos[0] + ds.offset[0]) * ds.scale, y = (n.pos[1] - h + ds.offset[1]) * ds.scale;
                        return [x, y, n.size[0] * ds.scale, h * ds.scale];
                    })(),
                }));
            }"""
        )

    def problems_shown(self) -> list[str]:
        """Error toasts and open dialogs (missing nodes or models, load errors)."""
        return self.page.evaluate(
            """() => [
                ...[...document.querySelectorAll('.p-toast-message-error, .p-toast-message-warn')]
                    .map(t => 'toast: ' + t.innerText.trim()),
                ...[...document.querySelectorAll('.p-dialog')].filter(d => d.offsetParent !== null)
                    .map(d => 'dialog: ' + d.innerText.trim().slice(0, 500)),
            ]"""
        )

    def covered_titles(self) -> list[str]:
        """Nodes whose title bar is not on the visible canvas (off screen or under the UI)."""
        return self.page.evaluate(
            """() => {
                const canvas = document.querySelector('#graph-canvas');
                const ds = app.canvas.ds, h = LiteGraph.NODE_TITLE_HEIGHT;
                const out = [];
                for (const n of app.rootGraph.nodes) {
                    const x0 = (n.pos[0] + ds.offset[0]) * ds.scale, y0 = (n.pos[1] - h + ds.offset[1]) * ds.scale;
                    const x1 = x0 + n.size[0] * ds.scale, y1 = y0 + h * ds.scale;
                    const points = [[x0 + 2, y0 + 2], [x1 - 2, y0 + 2], [x0 + 2, y1 - 2], [x1 - 2, y1 - 2]];
                    const hidden = points.filter(([x, y]) => document.elementFromPoint(x, y) !== canvas);
                    if (hidden.length) {
                        const what = hidden.map(([x, y]) => {
                            const el = document.elementFromPoint(x, y);
                            const cls = el && typeof el.className === 'string' && el.className
                                ? '.' + el.className.split(' ')[0] : '';
                            const name = el ? el.tagName.toLowerCase() + cls : 'off screen';
                            return `(${Math.round(x)},${Math.round(y)}) ` + name;
                        });
                        out.push(`node ${n.id} ${n.type} "${n.title}": ${what.join(', ')}`);
                    }
                }
                return out;
            }"""
        )

    def view(self) -> dict:
        return self.page.evaluate(
            "() => ({offset: [...app.canvas.ds.offset], scale: app.canvas.ds.scale})"
        )

    def set_widget(self, node_type: str, name: str, value: Any) -> int:
        """Set a widget on every node of this type, as typing into it does; returns how many."""
        return self.page.evaluate(
            """([type, name, value]) => {
                let count = 0;
                for (const n of app.rootGraph.nodes.filter(n => n.type === type)) {
                    const w = n.widgets?.find(w => w.name === name);
                    if (!w) throw new Error(`${type} has no widget ${name}`);
                    w.value = value;
                    w.callback?.(w.value, app.canvas, n);
                    count++;
                }
                app.rootGraph.setDirtyCanvas(true, true);
                return count;
            }""",
            [node_type, name, value],
        )

    def widget_value(self, node_id: str, name: str) -> Any:
        return self.page.evaluate(
            "([id, name]) => app.rootGraph.getNodeById(id)?.widgets?.find(w => w.name === name)?.value ?? null",
            [node_id, name],
        )

    # -- running ----------------------------------------------------------------------
    def click_run(self, timeout_ms: int = 60_000) -> tuple[int, dict]:
        """Click the Run button; returns the server's answer to the queued prompt."""
        button = self.page.get_by_role("button", name=re.compile(r"^\s*Run\s*$"))
        with self.page.expect_response(
            lambda r: r.url.rstrip("/").endswith("/prompt") and r.request.method == "POST",
            timeout=timeout_ms,
        ) as answer:
            button.first.click()
        response = answer.value
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text()}
        return response.status, body

    def wait_for(self, script: str, arg: Any = None, timeout_s: float = 600.0) -> Any:
        return self.page.wait_for_function(script, arg=arg, timeout=timeout_s * 1000).json_value()

    # -- artifacts --------------------------------------------------------------------
    def screenshot(self, label: str) -> Path:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = (
            self.artifacts
            / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}-{time.strftime('%H%M%S')}.png"
        )
        self.page.screenshot(path=str(path))
        self.screenshots.append(path)
        return path
