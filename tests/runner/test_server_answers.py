"""The runner against servers that are not a well-formed ComfyUI, or stop being one (issue 23):
each ends in a clear error, in seconds, with the server's text escaped; never a raw
traceback or a silent wait. The servers are small real HTTP servers on 127.0.0.1
(support.odd_server); runs through a real ComfyUI are in tests/host/test_runner_answers.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from comfyui_analogist.analogist_cli import comfy_api
from comfyui_analogist.analogist_cli.comfy_api import ComfyClient, ServerError, ServerGone
from comfyui_analogist.analogist_cli.graph import load_workflow
from comfyui_analogist.analogist_cli.main import main
from comfyui_analogist.analogist_cli.runner import Job, Outcome, summarize
from support.odd_server import OddServer, json_answer, raw_answer

ESC = "\x1b"
HOSTILE = "\x1b[2J\x1b[H\rdone\n/tmp/out/fake_b_prime.png\u202e\x00"


def stats(handler):
    json_answer(handler, {"system": {}, "devices": []})


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["run", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_against(capsys, tmp_path, server: OddServer) -> tuple[int, str, str]:
    return cli(
        capsys,
        "--server",
        server.url,
        "--checkpoint",
        "model.safetensors",
        "--out",
        tmp_path / "out",
    )


def assert_clean(text: str) -> None:
    """Nothing a terminal would act on: no ESC, CR, NUL or bidi override."""
    assert not any(ch in text for ch in (ESC, "\r", "\x00", "\u202e")), repr(text)


def node_defs(module: str | None = "custom_nodes.comfyui-analogist", **override) -> dict:
    """/object_info entries for every node the manual workflow uses (no inputs: the tests
    using it stop before the graph is built)."""
    types = {n["type"] for n in load_workflow("manual")["nodes"]} - {"Note", "MarkdownNote"}
    info = {}
    for name in sorted(types | {"AnalogistGridCompose", "AnalogistGridCrop"}):
        entry = {"input": {"required": {}}}
        if name.startswith("Analogist") and module is not None:
            entry["python_module"] = module
        info[name] = entry
    info["CheckpointLoaderSimple"] = {
        "input": {"required": {"ckpt_name": [["model.safetensors"]]}},
        "python_module": "nodes",
    }
    info.update(override)
    return info


# -- /object_info ---------------------------------------------------------------------------
def test_object_info_that_is_not_json_is_a_clear_error_with_the_text_escaped(capsys, tmp_path):
    routes = {
        "/system_stats": stats,
        "/object_info": lambda h: raw_answer(h, f"<html>{HOSTILE}</html>".encode()),
    }
    with OddServer(routes) as server:
        code, out, err = run_against(capsys, tmp_path, server)
    assert (
        code == 2 and "/object_info did not answer with JSON" in err and "custom node pack" in err
    )
    assert_clean(err)
    assert "\\x1b" in err and not out and not (tmp_path / "out").exists()


def test_object_info_http_500_is_a_clear_error(capsys, tmp_path):
    routes = {"/system_stats": stats, "/object_info": lambda h: json_answer(h, {"error": "x"}, 500)}
    with OddServer(routes) as server:
        code, _, err = run_against(capsys, tmp_path, server)
    assert code == 2 and "/object_info answered HTTP 500" in err and "Traceback" not in err


def test_a_missing_core_node_is_named(capsys, tmp_path):
    info = node_defs()
    del info["KSampler"]
    routes = {"/system_stats": stats, "/object_info": lambda h: json_answer(h, info)}
    with OddServer(routes) as server:
        code, _, err = run_against(capsys, tmp_path, server)
    assert code == 2 and "lacks ComfyUI's core node(s) KSampler" in err


def test_an_impostor_analogist_node_from_another_pack_is_refused(capsys, tmp_path):
    info = node_defs()
    info["AnalogistGridCrop"]["python_module"] = "custom_nodes.evil\x1b[2J-pack"
    routes = {"/system_stats": stats, "/object_info": lambda h: json_answer(h, info)}
    with OddServer(routes) as server:
        code, _, err = run_against(capsys, tmp_path, server)
    assert code == 2 and "AnalogistGridCrop (from custom_nodes.evil" in err
    assert (
        "the Analogist pack is custom_nodes.comfyui-analogist" in err
        and "another custom node pack" in err
    )
    assert_clean(err)


def test_without_python_module_the_identity_is_not_checked(capsys, tmp_path):
    """Hosts that do not report a node's module (the 2024 packaging) are not refused: the
    run goes on to the next step (here: the upload, which this server does not serve)."""
    info = node_defs(module=None)
    routes = {"/system_stats": stats, "/object_info": lambda h: json_answer(h, info)}
    with OddServer(routes) as server:
        code, _, err = run_against(capsys, tmp_path, server)
    assert code == 2 and "refused the upload" in err and "HTTP 404" in err


def test_a_stalled_answer_is_a_clear_error_not_a_hang():
    def stall(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b'{"KSampler": ')
        handler.wfile.flush()
        time.sleep(5)

    with OddServer({"/object_info": stall}) as server:
        client = ComfyClient(server.url, timeout=1)
        client.slow_timeout = 1
        started = time.monotonic()
        with pytest.raises(ServerError, match="the answer stopped midway"):
            client.object_info()
        assert time.monotonic() - started < 4


def test_an_upload_reply_without_a_name_is_a_clear_error(tmp_path):
    image = tmp_path / "b.png"
    image.write_bytes(b"png bytes")
    with OddServer({"/upload/image": lambda h: json_answer(h, {"subfolder": ""})}) as server:
        with pytest.raises(ServerError, match="without the stored file's name"):
            ComfyClient(server.url).upload_image(image, "b.png")


# -- /prompt and waiting --------------------------------------------------------------------
def test_node_errors_in_a_200_answer_are_reported_and_the_rest_is_taken_off_the_queue():
    body = {
        "prompt_id": "p1",
        "number": 1,
        "node_errors": {
            "3": {
                "class_type": "KSampler",
                "errors": [
                    {"message": "Value bigger than max", "details": f"denoise: 5.0 > 1.0{HOSTILE}"}
                ],
            }
        },
    }
    routes = {
        "/prompt": lambda h: json_answer(h, body),
        "/queue": lambda h: json_answer(h, {"queue_running": [], "queue_pending": []}),
    }
    with OddServer(routes) as server:
        client = ComfyClient(server.url)
        client.watch_progress = lambda: None  # no websocket on this server
        with pytest.raises(ServerError) as caught:
            client.queue({"3": {"class_type": "KSampler", "inputs": {}}})
        deletes = [json.loads(b) for m, p, b in server.requests if (m, p) == ("POST", "/queue")]
    text = str(caught.value)
    assert "refused part of the workflow" in text
    assert "node 3 (KSampler): Value bigger than max: denoise: 5.0 > 1.0" in text
    assert text.count("\n") == 1  # its own line break only: the server's are escaped
    assert_clean(text)
    assert deletes == [{"delete": ["p1"]}] and not client._mine


def test_an_execution_error_with_control_characters_is_printed_escaped(capsys):
    entry = {
        "p1": {
            "outputs": {},
            "status": {
                "completed": False,
                "status_str": "error",
                "messages": [
                    [
                        "execution_error",
                        {
                            "node_type": "KSampler",
                            "node_id": "3",
                            "exception_type": "RuntimeError",
                            "exception_message": HOSTILE,
                        },
                    ]
                ],
            },
        }
    }
    routes = {"/history/p1": lambda h: json_answer(h, entry)}
    with OddServer(routes) as server, pytest.raises(ServerError) as caught:
        ComfyClient(server.url).wait("p1", poll=0.05)
    code = summarize([Outcome(Job(Path("b.png"), 0), server.url, error=str(caught.value))])
    captured = capsys.readouterr()
    assert code == 1 and "KSampler (node 3): RuntimeError:" in captured.err
    assert_clean(captured.err + captured.out)
    assert "fake_b_prime.png" not in captured.out
    assert not any(line.startswith("/tmp/out/") for line in captured.err.splitlines())


def test_a_server_that_goes_away_mid_job_stops_the_wait_in_seconds(monkeypatch):
    monkeypatch.setattr(comfy_api, "REFUSED_GRACE_S", 1.0)
    routes = {
        "/history/p1": lambda h: json_answer(h, {}),
        "/queue": lambda h: json_answer(
            h, {"queue_running": [[0, "p1", {}, {}, []]], "queue_pending": []}
        ),
    }
    server = OddServer(routes).__enter__()
    client = ComfyClient(server.url, timeout=2)
    threading.Timer(0.5, server.stop).start()
    started = time.monotonic()
    with pytest.raises(ServerGone, match="went away during the run .connection refused"):
        client.wait("p1", poll=0.1)
    assert time.monotonic() - started < 5


def test_a_restarted_server_that_no_longer_knows_the_job_stops_the_wait():
    routes = {
        "/history/p1": lambda h: json_answer(h, {}),
        "/queue": lambda h: json_answer(h, {"queue_running": [], "queue_pending": []}),
    }
    with OddServer(routes) as server:
        started = time.monotonic()
        with pytest.raises(ServerError, match="no longer knows the run p1 .*restarted"):
            ComfyClient(server.url).wait("p1", poll=0.05)
        assert time.monotonic() - started < 3


def test_a_queued_job_is_waited_for_while_the_server_knows_it():
    polls = []

    def history(handler):
        polls.append(1)
        done = {
            "p1": {"outputs": {"9": {}}, "status": {"completed": True, "status_str": "success"}}
        }
        json_answer(handler, done if len(polls) > 6 else {})

    routes = {
        "/history/p1": history,
        "/queue": lambda h: json_answer(h, {"queue_running": [], "queue_pending": [[1, "p1"]]}),
    }
    with OddServer(routes) as server:
        finished = ComfyClient(server.url).wait("p1", poll=0.02)
    assert finished.outputs == {"9": {}}


def test_a_refused_connection_before_the_run_says_nothing_listens(capsys, tmp_path):
    with OddServer({}) as server:
        url = server.url
    code, _, err = cli(
        capsys, "--server", url, "--checkpoint", "m.safetensors", "--out", tmp_path / "o"
    )
    assert code == 2 and "connection refused: nothing listens there" in err


# -- numbers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flag, value", [("--denoise", "nan"), ("--denoise", "inf"), ("--denoise", "-inf")]
)
def test_nan_and_infinite_numbers_are_refused_before_anything_runs(capsys, tmp_path, flag, value):
    code, _, err = cli(
        capsys,
        f"{flag}={value}",
        "--server",
        "http://127.0.0.1:9",
        "--checkpoint",
        "m",
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and f"{flag} must be a number, got {float(value)}" in err
    assert not (tmp_path / "out").exists()
