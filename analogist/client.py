"""A small client for a ComfyUI server's HTTP API (standard library only).

``/object_info`` for node definitions, ``/upload/image`` for inputs, ``/prompt`` to queue,
``/history/<id>`` to wait, ``/view`` to download results.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path


class ServerError(RuntimeError):
    """The server is unreachable, refused the prompt, or the run failed."""


@dataclass
class Finished:
    prompt_id: str
    outputs: dict = field(default_factory=dict)


def _error_text(messages: list) -> str:
    parts = []
    for kind, data in messages:
        if kind == "execution_error":
            parts.append(
                f"{data.get('node_type')} (node {data.get('node_id')}): "
                f"{data.get('exception_type')}: {data.get('exception_message', '').strip()}"
            )
    return "\n".join(parts) or "the run failed without an error message"


def _node_errors_text(body: dict) -> str:
    lines = []
    error = body.get("error")
    if isinstance(error, dict):
        lines.append(f"{error.get('message', '')} {error.get('details', '')}".strip())
    for node_id, info in (body.get("node_errors") or {}).items():
        for err in info.get("errors", []):
            lines.append(f"node {node_id} ({info.get('class_type')}): {err.get('message')}: {err.get('details')}")
    return "\n".join(lines) or json.dumps(body)[:2000]


class ComfyClient:
    def __init__(self, url: str, timeout: float = 30.0):
        url = url.rstrip("/")
        if "://" not in url:
            url = "http://" + url
        self.url = url
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ComfyClient({self.url})"

    # -- plumbing ------------------------------------------------------------------------
    def _open(self, request: urllib.request.Request | str, timeout: float | None = None):
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(
                f"cannot reach ComfyUI at {self.url} ({reason}). Is it running? Start one with "
                "`bash scripts/run.sh`, or leave out --server to let the runner start its own."
            ) from exc

    def get_json(self, path: str, timeout: float | None = None):
        with self._open(self.url + path, timeout) as response:
            return json.loads(response.read())

    def check(self) -> dict:
        """``/system_stats``; raises :class:`ServerError` when the server does not answer."""
        try:
            return self.get_json("/system_stats", timeout=10)
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{self.url} answered HTTP {exc.code}: is it a ComfyUI server?") from exc
        except ValueError as exc:
            raise ServerError(f"{self.url} did not answer with JSON: is it a ComfyUI server?") from exc

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=120)

    # -- work ------------------------------------------------------------------------------
    def upload_image(self, path: Path, name: str) -> str:
        """Upload ``path`` into the server's input folder as ``name``; returns the stored name."""
        boundary = uuid.uuid4().hex
        parts = [
            (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
             "Content-Type: application/octet-stream\r\n\r\n").encode() + Path(path).read_bytes() + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        request = urllib.request.Request(
            self.url + "/upload/image", data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            with self._open(request, timeout=120) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{self.url} refused the upload of {path}: HTTP {exc.code}") from exc
        stored = body["name"]
        return f"{body['subfolder']}/{stored}" if body.get("subfolder") else stored

    def queue(self, prompt: dict) -> str:
        payload = json.dumps({"prompt": prompt, "client_id": uuid.uuid4().hex}).encode()
        request = urllib.request.Request(
            self.url + "/prompt", data=payload, headers={"Content-Type": "application/json"}
        )
        try:
            with self._open(request) as response:
                return json.loads(response.read())["prompt_id"]
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except ValueError:
                body = {}
            raise ServerError(f"{self.url} refused the workflow:\n{_node_errors_text(body)}") from exc

    def wait(self, prompt_id: str, timeout: float = 3600.0, poll: float = 0.5) -> Finished:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get_json(f"/history/{prompt_id}").get(prompt_id)
            status = (entry or {}).get("status") or {}
            if status.get("completed") is not None and status.get("status_str") in ("success", "error"):
                if status["status_str"] == "error":
                    raise ServerError(f"{self.url}: {_error_text(status.get('messages', []))}")
                return Finished(prompt_id, entry.get("outputs", {}))
            time.sleep(poll)
        raise ServerError(f"{self.url}: the run {prompt_id} did not finish within {timeout:.0f} s")

    def view(self, image: dict) -> bytes:
        query = urllib.parse.urlencode(
            {"filename": image["filename"], "subfolder": image.get("subfolder", ""),
             "type": image.get("type", "output")}
        )
        with self._open(f"{self.url}/view?{query}", timeout=120) as response:
            return response.read()
