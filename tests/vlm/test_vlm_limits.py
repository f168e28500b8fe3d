"""Issue 23: a server cannot hold the node, nor fill its memory, and Cancel stops a wait.

Against a real chat-completions server on 127.0.0.1 (tests/support/chat_server.py):

* ``timeout`` bounds each attempt's WHOLE answer: a server dripping one byte every 0.2 s
  used to hold the node for minutes, the HTTP library's timeout being per read;
* ComfyUI's own interrupt (``comfy.model_management``) stops a waiting request at once
  and reaches ComfyUI as its own exception (not an error of the node);
* an answer over the cap is refused, before and after decompression: a real gzip bomb
  (100 MiB of JSON in ~100 KiB) never grows in memory past the cap (measured with
  tracemalloc, which sees every thread's allocations).
"""

from __future__ import annotations

import json
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import support.chat_server as helper
from comfyui_analogist import analogist_vlm as vlm
from comfyui_analogist.analogist_vlm.transport import MAX_ANSWER_BYTES

Reply = helper.Reply


@pytest.fixture
def server():
    srv = helper.ChatServer().start()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch):
    """The openai client's pauses between retries, recorded instead of slept."""
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.fixture
def png():
    rng = np.random.default_rng(5)
    return vlm.encode_png(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))


def request_to(server, png):
    return vlm.VLMRequest(
        png,
        "gpt-4o",
        vlm.render_instruction(vlm.DEFAULT_INSTRUCTION, 1, 5),
        base_url=server.base_url,
    )


def no_key():
    return vlm.ApiKey(None, "no key (test)")


def gzip_stream(chunks):
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [packer.compress(c) for c in chunks]
    return b"".join(out) + packer.flush()


def test_a_server_dripping_its_answer_is_cut_at_the_timeout(server, tmp_path, png):
    body = json.dumps(helper.completion_json("slow answer")).encode()
    assert len(body) * 0.2 > 30  # whole, it would take more than 30 s
    server.script(Reply(body=body, drip=0.2))
    start = time.monotonic()
    with pytest.raises(vlm.VLMError, match=r"no answer within the 1\.5 s timeout"):
        vlm.VLMClient(tmp_path, timeout=1.5, max_retries=0).ask(request_to(server, png), no_key())
    assert time.monotonic() - start < 3.0
    assert server.count == 1


def test_with_retries_every_attempt_is_cut_and_the_total_is_bounded(server, tmp_path, png):
    body = json.dumps(helper.completion_json("slow answer")).encode()
    server.script(*[Reply(body=body, drip=0.2)] * 3)
    start = time.monotonic()
    with pytest.raises(vlm.VLMError, match=r"did not answer after 3 attempt\(s\)"):
        vlm.VLMClient(tmp_path, timeout=1.0, max_retries=2).ask(request_to(server, png), no_key())
    assert time.monotonic() - start < 5.0
    assert server.count == 3


def interrupt_exception(mm):
    """ComfyUI's interrupt exception: in model_management (0.30) or comfy.interruption (0.0.1)."""
    found = getattr(mm, "InterruptProcessingException", None)
    if found is None:
        from comfy import interruption

        found = interruption.InterruptProcessingException
    return found


def test_comfyui_interrupt_stops_a_waiting_request_at_once(server, tmp_path, png):
    import comfy.model_management as mm

    server.script(Reply(delay=60))
    mm.interrupt_current_processing(False)
    timer = threading.Timer(0.5, mm.interrupt_current_processing, args=(True,))
    client = vlm.VLMClient(
        tmp_path,
        timeout=30,
        max_retries=3,
        interrupted=mm.throw_exception_if_processing_interrupted,
    )
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(interrupt_exception(mm)):
            client.ask(request_to(server, png), no_key())
    finally:
        timer.cancel()
        mm.interrupt_current_processing(False)
    assert 0.4 < time.monotonic() - start < 2.0
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("*.json"))


def test_a_gzip_bomb_is_refused_without_growing_in_memory(server, tmp_path, png):
    head = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"'
    bomb = gzip_stream([head] + [b"a" * (1 << 20)] * 100 + [b'"},"finish_reason":"stop"}]}'])
    assert len(bomb) < 200_000
    server.script(Reply(body=bomb, headers={"Content-Encoding": "gzip"}))
    tracemalloc.start()
    try:
        with pytest.raises(vlm.VLMError, match=r"larger than 1 MiB once decompressed"):
            vlm.VLMClient(tmp_path, timeout=10, max_retries=2).ask(
                request_to(server, png), no_key()
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MAX_ANSWER_BYTES, f"peak {peak / 2**20:.0f} MiB"
    assert server.count == 1  # not asked again: an oversized answer is not retried


def test_a_gzip_answer_of_normal_size_still_works(server, tmp_path, png):
    body = json.dumps(helper.completion_json("compressed cat portrait")).encode()
    server.script(Reply(body=gzip_stream([body]), headers={"Content-Encoding": "gzip"}))
    result = vlm.VLMClient(tmp_path, timeout=10).ask(request_to(server, png), no_key())
    assert result.prompts == ["compressed cat portrait"]
    assert server.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_a_plain_answer_over_the_cap_is_refused(server, tmp_path, png):
    huge = json.dumps(helper.completion_json("word " * (MAX_ANSWER_BYTES // 4))).encode()
    server.script(Reply(body=huge))
    with pytest.raises(vlm.VLMError, match=r"larger than 1 MiB \(it announced 1\.\d+ MiB\)"):
        vlm.VLMClient(tmp_path, timeout=10, max_retries=2).ask(request_to(server, png), no_key())
    assert server.count == 1


def test_an_encoding_not_asked_for_is_refused(server, tmp_path, png):
    server.script(Reply(body=b"\x00" * 64, headers={"Content-Encoding": "br"}))
    with pytest.raises(
        vlm.VLMError, match=r"answered in the encoding 'br', which was not asked for"
    ):
        vlm.VLMClient(tmp_path, timeout=10, max_retries=1).ask(request_to(server, png), no_key())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0.0, -1.0])
def test_a_timeout_that_is_not_a_positive_number_is_refused(tmp_path, bad):
    with pytest.raises(vlm.VLMError, match="timeout must be a number of seconds above 0"):
        vlm.VLMClient(tmp_path, timeout=bad)
