"""A real HTTP server on 127.0.0.1 that speaks POST /v1/chat/completions, for the GPT-4V tests.

Scriptable per test: queue :class:`Reply` objects (status, body, delay); when the queue is
empty it answers ``default_text`` as a well-formed chat completion. Every request is
recorded (path, headers, parsed JSON body). Runs ``http.server`` in a daemon thread;
delayed replies wait on an event that the fixture sets at teardown, so a "hanging"
server never outlives its test.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion_json(
    text: str | None,
    model: str = "gpt-4o",
    *,
    finish_reason: str = "stop",
    refusal: str | None = None,
) -> dict[str, Any]:
    """A chat completion shaped like OpenAI's."""
    return {
        "id": "chatcmpl-test0001",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": text,
                    "refusal": refusal,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 812, "completion_tokens": 9, "total_tokens": 821},
        "system_fingerprint": "fp_test",
    }


def error_json(message: str, type_: str, code: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict -> JSON; str/bytes -> sent as is; None -> completion of text
    text: str | None = None
    delay: float = 0.0
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drip: float = 0.0  # > 0: the body is sent one byte at a time, this many seconds apart


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any


class ChatServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self.default_text = "smiling woman exaggerated features"
        self.stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with server._lock:
                    server.requests.append(
                        Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    reply = server.replies.popleft() if server.replies else Reply()
                if reply.delay and server.stop.wait(reply.delay):
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    reply = Reply(
                        404,
                        error_json(
                            f"Unknown path {self.path}", "invalid_request_error", "unknown_url"
                        ),
                    )
                payload = reply.body
                if payload is None:
                    model = body.get("model", "?") if isinstance(body, dict) else "?"
                    text = reply.text if reply.text is not None else server.default_text
                    payload = completion_json(text, model)
                data = (
                    payload
                    if isinstance(payload, bytes)
                    else (
                        payload.encode()
                        if isinstance(payload, str)
                        else json.dumps(payload).encode()
                    )
                )
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", reply.content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("x-request-id", f"req_{len(server.requests)}")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    if reply.drip:
                        for i in range(len(data)):
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                            if server.stop.wait(reply.drip):
                                return
                    else:
                        self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def start(self) -> ChatServer:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def count(self) -> int:
        return len(self.requests)
