"""A small HTTP server on 127.0.0.1 that answers like a broken or hostile "ComfyUI"
(not JSON, HTTP 500, a stalled answer, a reply without a name, control characters in its
error text, a server that goes away). It imitates no working ComfyUI: it is the kind of
server the runner must stop on with a clear error. Routes are ``{path: handler}``; a
handler gets the request handler and writes the answer (see :func:`json_answer`)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Route = Callable[[BaseHTTPRequestHandler], None]


def json_answer(handler: BaseHTTPRequestHandler, body, status: int = 200) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def raw_answer(handler: BaseHTTPRequestHandler, data: bytes, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class OddServer:
    def __init__(self, routes: dict[str, Route]):
        self.routes = routes
        self.requests: list[tuple[str, str, bytes]] = []  # (method, path, body)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def handle_one(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                outer.requests.append((method, path, body))
                route = outer.routes.get(path) or next(
                    (
                        r
                        for p, r in outer.routes.items()
                        if p.endswith("*") and path.startswith(p[:-1])
                    ),
                    None,
                )
                if route is None:
                    json_answer(self, {}, 404)
                else:
                    route(self)

            def do_GET(self):
                self.handle_one("GET")

            def do_POST(self):
                self.handle_one("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> OddServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop listening: later connections are refused."""
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
