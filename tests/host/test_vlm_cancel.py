"""Issue 23 through the real ComfyUI server: a VLM server that drips its answer cannot hold
the queue. ComfyUI's Cancel (POST /interrupt) stops the waiting GPT-4V node within a
second or two, and the job queued behind it runs. A NaN timeout in a prompt's JSON (which
ComfyUI's own min/max check lets through) is refused with a message naming it.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
from host.test_secrets import analogist_vlm_prompt
from support.chat_server import ChatServer, Reply, completion_json
from support.images import save_pattern

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def chat():
    server = ChatServer().start()
    server.default_text = "glowing neon portrait"
    yield server
    server.close()


@pytest.fixture(scope="module")
def inputs(comfy_server):
    for seed, name in enumerate(("a.png", "a_prime.png", "b.png")):
        save_pattern(comfy_server.workspace / "input" / name, 96, 80, seed=seed)
    return comfy_server


def queue(server, prompt: dict) -> str:
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200 and "prompt_id" in body, body
    return body["prompt_id"]


def finished(server, prompt_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entry = server.get_json(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            return entry
        time.sleep(0.1)
    raise TimeoutError(f"{prompt_id} did not finish in {timeout} s:\n{server.log_tail()}")


def message_kinds(entry: dict) -> list[str]:
    return [kind for kind, _ in entry["status"].get("messages", [])]


def test_cancel_stops_a_dripping_vlm_server_and_the_next_job_runs(inputs, chat):
    server = inputs
    slow = json.dumps(completion_json("never finished")).encode()
    chat.script(Reply(body=slow, drip=0.5))  # whole, about 4 minutes
    hanging = analogist_vlm_prompt(chat.base_url)
    hanging["7"]["inputs"].update(timeout=600.0, seed=11)
    first = queue(server, hanging)
    following = analogist_vlm_prompt(chat.base_url)
    following["7"]["inputs"]["seed"] = 12
    second = queue(server, following)

    deadline = time.monotonic() + 120
    while chat.count < 1:  # the GPT-4V node is waiting on the server
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.1)
    time.sleep(1.0)
    start = time.monotonic()
    assert server.post_json("/interrupt", {})[0] == 200
    entry = finished(server, first, timeout=30)
    assert time.monotonic() - start < 5.0, "Cancel did not stop the waiting node promptly"
    assert "execution_interrupted" in message_kinds(entry)

    entry = finished(server, second, timeout=300)
    assert entry["status"]["status_str"] == "success", server.log_tail()
    assert "glowing neon portrait" in json.dumps(entry["outputs"])


def test_a_nan_timeout_is_refused_naming_it(inputs, chat):
    server = inputs
    prompt = analogist_vlm_prompt(chat.base_url)
    prompt["7"]["inputs"].update(timeout=float("nan"), seed=13)
    before = chat.count
    entry = finished(server, queue(server, prompt), timeout=120)
    assert entry["status"]["status_str"] == "error"
    errors = json.dumps(entry["status"]["messages"])
    assert "timeout must be a number of seconds" in errors and "nan" in errors
    assert chat.count == before
