"""A small client for a ComfyUI server's HTTP API (standard library only).

``/object_info`` for node definitions, ``/upload/image`` for inputs, ``/prompt`` to queue,
``/history/<id>`` to wait, ``/view`` to download results, ``/queue`` and ``/interrupt`` to
cancel what this client queued, and the ``/ws`` websocket for step progress.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import socket
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class ServerError(RuntimeError):
    """The server is unreachable, refused the prompt, or the run failed."""


class ServerGone(ServerError):
    """Nothing listens at the server's address any more (it exited or restarted)."""


# Seconds of refused connections before a job is given up: a restart of ComfyUI takes
# longer than this, and a refused connection means no server, not a busy one.
REFUSED_GRACE_S = 5.0


def printable(text: object) -> str:
    """``text`` safe for a terminal: control characters (ESC, CR, NUL, BEL, bidi
    overrides...) shown as escapes, so a server's message cannot clear the screen, move
    the cursor or fake output lines (newlines are escaped too: each line the runner
    prints is its own)."""
    out = []
    for ch in str(text):
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}"
                if code < 0x100
                else f"\\u{code:04x}"
                if code < 0x10000
                else f"\\U{code:08x}"
            )
    return "".join(out)


@dataclass
class Finished:
    prompt_id: str
    outputs: dict = field(default_factory=dict)


def _error_text(messages: list) -> str:
    parts = []
    for kind, data in messages:
        if kind == "execution_error":
            parts.append(
                printable(
                    f"{data.get('node_type')} (node {data.get('node_id')}): "
                    f"{data.get('exception_type')}: {str(data.get('exception_message', '')).strip()}"
                )
            )
    return "\n".join(parts) or "the run failed without an error message"


def _node_errors_text(body: dict) -> str:
    lines = []
    if not isinstance(body, dict):
        return printable(json.dumps(body)[:2000])
    error = body.get("error")
    if isinstance(error, dict):
        lines.append(printable(f"{error.get('message', '')} {error.get('details', '')}".strip()))
    node_errors = body.get("node_errors")
    for node_id, info in node_errors.items() if isinstance(node_errors, dict) else []:
        info = info if isinstance(info, dict) else {}
        for err in info.get("errors", []) if isinstance(info.get("errors"), list) else []:
            err = err if isinstance(err, dict) else {"message": err}
            lines.append(
                printable(
                    f"node {node_id} ({info.get('class_type')}): {err.get('message')}: {err.get('details')}"
                )
            )
    return "\n".join(lines) or printable(json.dumps(body)[:2000])


def check_url(url: str) -> str:
    """``url`` as an http(s) base URL (``host:port`` gets ``http://``), or a ServerError
    that says what is wrong with it."""
    text = str(url).strip()
    if "://" not in text:
        text = "http://" + text
    hint = "give it as http://HOST:PORT, e.g. --server http://127.0.0.1:8188"
    if not text or any(ch.isspace() for ch in text):
        raise ServerError(f"--server {url!r} is not a URL (it contains spaces): {hint}")
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number 0-65535)
    except ValueError as exc:
        raise ServerError(f"--server {url!r} is not a valid URL ({exc}): {hint}") from None
    if parts.scheme not in ("http", "https"):
        raise ServerError(
            f"--server {url!r}: the scheme must be http or https, not {parts.scheme!r}: {hint}"
        )
    if not parts.hostname:
        raise ServerError(f"--server {url!r} names no host: {hint}")
    if parts.username is not None or parts.password is not None:
        # Not repeated: the part before @ may be a password.
        raise ServerError(
            "--server: a URL with a user name or password (user:password@host) is not "
            f"supported; ComfyUI's API takes none. {hint}"
        )
    if parts.query or parts.fragment:
        raise ServerError(f"--server {url!r} has a query or fragment; {hint}")
    return text.rstrip("/")


class ComfyClient:
    def __init__(self, url: str, timeout: float = 30.0):
        self.url = check_url(url)
        self.timeout = timeout
        # For the answers that take long on a busy server (/object_info, uploads, downloads).
        self.slow_timeout = max(timeout, 120.0)
        # One id for this client: the server sends this run's progress to it on /ws.
        self.client_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._mine: set[str] = set()  # queued by this client and not yet finished
        self.closed = False  # set by cancel(): nothing more is queued
        self.progress: dict[str, tuple[int, int]] = {}  # prompt_id -> (step, steps)
        # Called with (prompt_id, value, max) from the websocket thread.
        self.on_progress: Callable[[str, int, int], None] | None = None
        self._ws: _ProgressSocket | None = None

    def __repr__(self) -> str:
        return f"ComfyClient({self.url})"

    # -- plumbing ------------------------------------------------------------------------
    def _open(self, request: urllib.request.Request | str, timeout: float | None = None):
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError:
            raise
        except ValueError as exc:  # http.client.InvalidURL and friends
            raise ServerError(f"{self.url} is not a usable URL ({exc})") from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                raise ServerGone(
                    f"cannot reach ComfyUI at {self.url} (connection refused: nothing listens "
                    "there). Is it running? Start one with `bash scripts/run.sh`, or leave out "
                    "--server to let the runner start its own."
                ) from exc
            raise ServerError(
                f"cannot reach ComfyUI at {self.url} ({reason}). Is it running? Start one with "
                "`bash scripts/run.sh`, or leave out --server to let the runner start its own."
            ) from exc

    def _read(self, response, path: str) -> bytes:
        """The whole body; a server that stalls mid-answer or drops the connection is a
        :class:`ServerError`, not a raw socket traceback."""
        try:
            return response.read()
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise ServerError(
                f"{self.url}{path.split('?')[0]}: the answer stopped midway ({exc or type(exc).__name__}); "
                "is it a ComfyUI server, and is it still running?"
            ) from exc

    def get_json(self, path: str, timeout: float | None = None):
        """``path``'s JSON answer; HTTP errors stay ``HTTPError`` for the caller to word,
        everything else that is not a JSON answer becomes a :class:`ServerError`."""
        with self._open(self.url + path, timeout) as response:
            data = self._read(response, path)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ServerError(
                f"{self.url}{path.split('?')[0]} did not answer with JSON ({printable(data[:80])!s}...): "
                "is it a ComfyUI server?"
            ) from exc

    def check(self) -> dict:
        """``/system_stats``; raises :class:`ServerError` when the server does not answer."""
        try:
            return self.get_json("/system_stats", timeout=10)
        except urllib.error.HTTPError as exc:
            raise ServerError(
                f"{self.url} answered HTTP {exc.code}: is it a ComfyUI server?"
            ) from exc
        except ValueError as exc:
            raise ServerError(
                f"{self.url} did not answer with JSON: is it a ComfyUI server?"
            ) from exc

    def object_info(self) -> dict:
        """The server's node definitions. A server whose ``/object_info`` fails (often
        another custom node pack that breaks it) gets a clear error."""
        hint = (
            "ComfyUI's /object_info lists every node; when it fails, a custom node pack "
            "usually broke it: see that ComfyUI's console, remove or fix the pack, restart it"
        )
        try:
            info = self.get_json("/object_info", timeout=self.slow_timeout)
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{self.url}/object_info answered HTTP {exc.code}. {hint}") from None
        except ServerError as exc:
            raise ServerError(f"{exc}. {hint}") from None
        if not isinstance(info, dict) or not all(isinstance(v, dict) for v in info.values()):
            raise ServerError(f"{self.url}/object_info is not a list of node definitions. {hint}")
        return info

    # -- work ------------------------------------------------------------------------------
    def upload_image(self, path: Path, name: str, data: bytes | None = None) -> str:
        """Upload ``path`` into the server's input folder; returns the stored name.

        The stored name is ``name`` with the file's SHA-256 prefix before the suffix, so
        runs sharing a server never overwrite each other's inputs: the same name always
        means the same bytes (overwriting it rewrites identical content).
        """
        data = Path(path).read_bytes() if data is None else data
        stem, dot, suffix = name.rpartition(".")
        digest = hashlib.sha256(data).hexdigest()[:20]
        name = f"{stem}_{digest}.{suffix}" if dot else f"{name}_{digest}"
        boundary = uuid.uuid4().hex
        parts = [
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n",
            f'--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue\r\n'.encode(),
            f"--{boundary}--\r\n".encode(),
        ]
        request = urllib.request.Request(
            self.url + "/upload/image",
            data=b"".join(parts),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        try:
            with self._open(request, timeout=self.slow_timeout) as response:
                text = self._read(response, "/upload/image")
        except urllib.error.HTTPError as exc:
            raise ServerError(
                f"{self.url} refused the upload of {path}: HTTP {exc.code}"
                + (
                    " (its input folder's disk may be full, or not writable: see that ComfyUI's "
                    "console)"
                    if exc.code >= 500
                    else ""
                )
            ) from exc
        try:
            body = json.loads(text)
            stored, subfolder = body["name"], body.get("subfolder") or ""
        except (ValueError, KeyError, TypeError):
            raise ServerError(
                f"{self.url} answered the upload of {path} without the stored file's name "
                f"({printable(text[:120])}): is it a ComfyUI server?"
            ) from None
        if not isinstance(stored, str) or not stored or not isinstance(subfolder, str):
            raise ServerError(
                f"{self.url} answered the upload of {path} with a bad name: {printable(stored)!r}"
            )
        return f"{subfolder}/{stored}" if subfolder else stored

    def queue(self, prompt: dict) -> str:
        self.watch_progress()
        payload = json.dumps({"prompt": prompt, "client_id": self.client_id}).encode()
        request = urllib.request.Request(
            self.url + "/prompt", data=payload, headers={"Content-Type": "application/json"}
        )
        try:
            with self._lock:  # cancel() either sees this prompt or stops it being queued
                if self.closed:
                    raise ServerError(f"{self.url}: cancelled, nothing more is queued")
                with self._open(request) as response:
                    text = self._read(response, "/prompt")
                try:
                    body = json.loads(text)
                    prompt_id = body["prompt_id"]
                except (ValueError, KeyError, TypeError):
                    raise ServerError(
                        f"{self.url}/prompt answered without a prompt id ({printable(text[:120])}): "
                        "is it a ComfyUI server?"
                    ) from None
                self._mine.add(prompt_id)
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
            except (ValueError, OSError):
                body = {}
            raise ServerError(
                f"{self.url} refused the workflow:\n{_node_errors_text(body)}"
            ) from exc
        if body.get("node_errors"):
            # ComfyUI queues the outputs that validated and answers 200: the failed node's
            # output (B') would be missing. Take the rest off the queue and say why.
            self._drop(prompt_id)
            raise ServerError(
                f"{self.url} refused part of the workflow:\n"
                f"{_node_errors_text({'node_errors': body['node_errors']})}"
            )
        return prompt_id

    def _drop(self, prompt_id: str) -> None:
        """Take one of this client's prompts off the queue (or interrupt it if it runs)."""
        with self._lock:
            self._mine.discard(prompt_id)
        try:
            self._post_json("/queue", {"delete": [prompt_id]})
            running = self.get_json("/queue", timeout=10).get("queue_running", [])
            if any(len(item) > 1 and item[1] == prompt_id for item in running):
                self._post_json("/interrupt", {"prompt_id": prompt_id})
        except (ServerError, urllib.error.HTTPError, OSError, ValueError, AttributeError):
            pass

    def wait(self, prompt_id: str, timeout: float = 3600.0, poll: float = 0.5) -> Finished:
        """Poll ``/history`` until the prompt finished. Stops with a clear error, in seconds,
        when the server is gone (connections refused for :data:`REFUSED_GRACE_S`) or no
        longer knows the prompt (neither queued, running nor in its history: it restarted);
        a server that is merely busy (slow answers) gets minutes."""
        deadline = time.monotonic() + timeout
        unanswered_since = refused_since = None
        unknown = 0
        while time.monotonic() < deadline:
            try:
                entry = self._history(prompt_id)
                if entry is None and not self._queued(prompt_id):
                    # Finished between the two requests, or unknown: ask once more.
                    entry = self._history(prompt_id)
                    unknown = unknown + 1 if entry is None else 0
                else:
                    unknown = 0
                unanswered_since = refused_since = None
            except ServerGone:
                refused_since = refused_since or time.monotonic()
                if time.monotonic() - refused_since > REFUSED_GRACE_S:
                    with self._lock:
                        self._mine.discard(prompt_id)
                    raise ServerGone(
                        f"{self.url} went away during the run (connection refused for "
                        f"{REFUSED_GRACE_S:.0f} s): that ComfyUI exited or was stopped, so the "
                        "job is lost. Start it again and rerun."
                    ) from None
                time.sleep(poll)
                continue
            except ServerError:
                # A busy server (loading a model on a loaded machine) may not answer for a
                # while; give up only when it stays silent for minutes.
                unanswered_since = unanswered_since or time.monotonic()
                if time.monotonic() - unanswered_since > 300:
                    raise
                time.sleep(poll)
                continue
            if unknown >= 2:
                with self._lock:
                    self._mine.discard(prompt_id)
                raise ServerError(
                    f"{self.url} no longer knows the run {prompt_id} (it is neither queued, "
                    "running nor finished there): that ComfyUI was restarted during the run, "
                    "so the job is lost. Rerun it."
                )
            entry = entry or {}
            status = entry.get("status") or {}
            if status.get("completed") is not None and status.get("status_str") in (
                "success",
                "error",
            ):
                with self._lock:
                    self._mine.discard(prompt_id)
                if status["status_str"] == "error":
                    raise ServerError(f"{self.url}: {_error_text(status.get('messages', []))}")
                return Finished(prompt_id, entry.get("outputs", {}))
            time.sleep(poll)
        raise ServerError(f"{self.url}: the run {prompt_id} did not finish within {timeout:.0f} s")

    def _history(self, prompt_id: str) -> dict | None:
        try:
            body = self.get_json(f"/history/{prompt_id}")
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{self.url}/history answered HTTP {exc.code}") from None
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    def _queued(self, prompt_id: str) -> bool:
        """Is ``prompt_id`` running or pending on the server?"""
        try:
            body = self.get_json("/queue", timeout=30)
        except urllib.error.HTTPError as exc:
            raise ServerError(f"{self.url}/queue answered HTTP {exc.code}") from None
        if not isinstance(body, dict):
            return True  # cannot tell: keep waiting
        items = list(body.get("queue_running") or []) + list(body.get("queue_pending") or [])
        return any(
            isinstance(item, list) and len(item) > 1 and item[1] == prompt_id for item in items
        )

    def _post_json(self, path: str, payload: dict) -> None:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        with self._open(request, timeout=10) as response:
            response.read()

    def cancel(self) -> list[str]:
        """Stop what this client queued: pending prompts leave the queue, and the running
        one is interrupted only if it is ours. Nothing more is queued afterwards. Returns
        the prompt ids it cancelled."""
        with self._lock:
            self.closed = True
            mine = sorted(self._mine)
            self._mine.clear()
        if mine:
            self._post_json("/queue", {"delete": mine})
            running = self.get_json("/queue", timeout=10).get("queue_running", [])
            for item in running:
                if len(item) > 1 and item[1] in mine:
                    # Servers that know targeted interrupts check the id themselves; older
                    # ones interrupt whatever runs, which the snapshot above says is ours.
                    self._post_json("/interrupt", {"prompt_id": item[1]})
        self.close()
        return mine

    # -- progress ---------------------------------------------------------------------------
    def watch_progress(self) -> None:
        """Listen on the server's websocket for this client's step progress (best effort:
        without it the run still works, it just reports less)."""
        if self._ws is not None:
            return
        self._ws = _ProgressSocket(self)
        self._ws.start()

    def close(self) -> None:
        if self._ws is not None:
            self._ws.stop()

    def _progress(self, data: dict) -> None:
        prompt_id = str(data.get("prompt_id"))
        try:
            value, total = int(data["value"]), int(data["max"])
        except (KeyError, TypeError, ValueError):
            return
        self.progress[prompt_id] = (value, total)
        if self.on_progress is not None:
            self.on_progress(prompt_id, value, total)

    def view(self, image: dict) -> bytes:
        query = urllib.parse.urlencode(
            {
                "filename": image["filename"],
                "subfolder": image.get("subfolder", ""),
                "type": image.get("type", "output"),
            }
        )
        with self._open(f"{self.url}/view?{query}", timeout=self.slow_timeout) as response:
            return response.read()


class _ProgressSocket(threading.Thread):
    """A minimal websocket client (RFC 6455, text frames only) for ComfyUI's ``/ws``.

    Standard library only, so the runner needs nothing beyond the pack's own
    requirements. Messages ``{"type": "progress", "data": {"value", "max", "prompt_id"}}``
    go to :meth:`ComfyClient._progress`; binary frames (previews) are skipped.
    """

    def __init__(self, client: ComfyClient):
        super().__init__(daemon=True, name=f"analogist-ws-{client.url}")
        self.client = client
        self.sock: socket.socket | None = None
        self.stopping = False
        self.connected = threading.Event()

    def stop(self) -> None:
        self.stopping = True
        sock = self.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def run(self) -> None:
        try:
            self._connect()
            self.connected.set()
            while not self.stopping:
                opcode, payload = self._frame()
                if opcode == 8:  # close
                    return
                if opcode == 9:  # ping
                    self._send(10, payload)
                elif opcode == 1:
                    message = json.loads(payload.decode("utf-8", "replace"))
                    if isinstance(message, dict) and message.get("type") == "progress":
                        self.client._progress(message.get("data") or {})
        except (OSError, ValueError, EOFError, struct.error):
            pass  # progress is a nicety: the HTTP polling decides how the run ends
        finally:
            self.connected.set()

    def _connect(self) -> None:
        parts = urllib.parse.urlsplit(self.client.url)
        if parts.scheme != "http":
            raise OSError("websocket progress only over plain http")
        port = parts.port or 80
        self.sock = socket.create_connection((parts.hostname, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        path = (parts.path or "") + f"/ws?clientId={self.client.client_id}"
        hostname = parts.hostname or ""
        host = hostname if ":" not in hostname else f"[{hostname}]"
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise EOFError("closed during the handshake")
            head += chunk
            if len(head) > 65536:
                raise ValueError("handshake too long")
        status = head.split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise OSError(f"no websocket: {status!r}")
        expected = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        if expected not in head:
            raise OSError("bad websocket accept key")
        self.sock.settimeout(None)

    def _read(self, count: int) -> bytes:
        data = b""
        assert self.sock is not None  # connected in start()
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise EOFError("websocket closed")
            data += chunk
        return data

    def _frame(self) -> tuple[int, bytes]:
        """One whole message (continuation frames joined)."""
        opcode, payload = None, b""
        while True:
            first, second = self._read(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._read(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if second & 0x80 else None
            data = self._read(length)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            code = first & 0x0F
            if code >= 8:  # control frames come whole, even between fragments
                return code, data
            if opcode is None:
                opcode = code
            payload += data
            if first & 0x80:
                return opcode, payload

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        header = bytes([0x80 | opcode, 0x80 | len(payload)])  # control frames: < 126 bytes
        assert self.sock is not None  # connected in start()
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
