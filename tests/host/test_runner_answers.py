"""The runner through real ComfyUI servers that refuse part of a job, run an impostor
node, go away mid-job, or write onto a full disk (issue 23): a clear error, in seconds,
and nothing half-written. (Servers that are not a well-formed ComfyUI at all:
tests/runner/test_server_answers.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from functools import partial
from pathlib import Path

import pytest
from support import runner
from support.comfy_server import PACK_DIR_NAME, ComfyServer, make_workspace
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

SMALL = ["--steps", "1", "--cell", "64"]
LONG = ["--steps", "2000", "--cell", "64"]  # still sampling when the server goes away


analogist = partial(runner.analogist, "run")


def start_runner(tmp_path: Path, name: str, *args) -> tuple[subprocess.Popen, Path]:
    return runner.start_runner(tmp_path / f"tmp-{name}", tmp_path / f"{name}.err", *args)


def wait_for(err: Path, pattern: str, process: subprocess.Popen, timeout: float = 300) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, err.read_text(errors="replace"))
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(
                f"exited ({process.returncode}) before {pattern!r}:\n"
                + err.read_text(errors="replace")[-3000:]
            )
        time.sleep(0.3)
    process.kill()
    raise AssertionError(f"no {pattern!r} within {timeout} s")


@pytest.fixture(scope="module")
def answers_server(tmp_path_factory, sd15_checkpoint):
    """A server of this module's own, with a start-up allowance for a loaded machine."""
    workspace = make_workspace(
        tmp_path_factory.mktemp("comfyui"), models={"checkpoints": [sd15_checkpoint]}
    )
    server = ComfyServer(workspace).start(timeout=900)
    yield server
    server.stop()


def test_a_denoise_the_sampler_refuses_is_reported_not_a_missing_b_prime(tmp_path, answers_server):
    """ComfyUI answers 200 and queues the outputs that validated (the A | A' | B strip);
    the runner names the refused input and takes the rest off the queue."""
    out = tmp_path / "out"
    done = analogist(
        "--server",
        answers_server.url,
        "--checkpoint",
        checkpoint_name(0),
        "--out",
        out,
        "--denoise",
        "5",
        *SMALL,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "refused" in done.stderr and "denoise" in done.stderr, done.stderr[-3000:]
    assert "saved no B' image" not in done.stderr and "Traceback" not in done.stderr
    assert not list(out.glob("*_b_prime*.png"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        queue = answers_server.get_json("/queue")
        if not queue["queue_running"] and not queue["queue_pending"]:
            break
        time.sleep(0.2)
    assert not queue["queue_running"] and not queue["queue_pending"]


IMPOSTOR = """
class Impostor:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"grid": ("IMAGE",), "layout": ("ANALOGIST_LAYOUT",)}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "crop"
    CATEGORY = "Impostor"
    def crop(self, grid, layout):
        import torch
        return (torch.zeros(1, 8, 8, 3),)

NODE_CLASS_MAPPINGS = {"AnalogistGridCrop": Impostor}
"""


def impostor_after_our_pack(custom_nodes: Path) -> str:
    """An impostor pack in ``custom_nodes`` that ComfyUI loads after ours (it loads them in
    ``os.listdir`` order; the last one to register an id wins)."""
    for k in range(50):
        name = f"impostor_{k}"
        (custom_nodes / name).mkdir()
        (custom_nodes / name / "__init__.py").write_text(IMPOSTOR)
        order = os.listdir(os.path.realpath(custom_nodes))
        if order.index(name) > order.index(PACK_DIR_NAME):
            return name
        (custom_nodes / name / "__init__.py").unlink()
        (custom_nodes / name).rmdir()
    pytest.skip("no impostor name that this filesystem lists after the pack")


def test_an_impostor_node_from_another_pack_stops_the_run(tmp_path, sd15_checkpoint):
    workspace = make_workspace(tmp_path / "comfyui", models={"checkpoints": [sd15_checkpoint]})
    name = impostor_after_our_pack(workspace / "custom_nodes")
    server = ComfyServer(workspace).start(timeout=900)
    try:
        crop = server.object_info()["AnalogistGridCrop"]
        if "python_module" not in crop:
            pytest.skip(
                "this host's /object_info does not name a node's module (python_module), "
                "so an impostor cannot be told from the pack (ComfyUI 0.0.1)"
            )
        assert crop["python_module"] == f"custom_nodes.{name}"  # the impostor is what runs
        out = tmp_path / "out"
        done = analogist(
            "--server", server.url, "--checkpoint", checkpoint_name(0), "--out", out, *SMALL
        )
    finally:
        server.stop()
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"AnalogistGridCrop (from custom_nodes.{name}) is not this pack's node" in done.stderr
    assert f"custom_nodes.{PACK_DIR_NAME}" in done.stderr and not out.exists()


def pending(url: str) -> list:
    with urllib.request.urlopen(url + "/queue", timeout=30) as response:
        return json.loads(response.read())["queue_pending"]


def test_a_second_runner_on_the_first_runners_comfyui_stops_when_it_goes_away(
    tmp_path, sd15_checkpoint
):
    """The first runner's embedded ComfyUI ends with it; the second runner, sending its job
    there, stops in seconds with a clear message instead of waiting an hour."""
    first, first_err = start_runner(
        tmp_path, "first", "--checkpoint", sd15_checkpoint, "--out", tmp_path / "out1", *LONG
    )
    second = None
    try:
        url = wait_for(first_err, r"on (http://127\.0\.0\.1:\d+), log", first).group(1)
        wait_for(first_err, "step ", first)
        second, second_err = start_runner(
            tmp_path,
            "second",
            "--server",
            url,
            "--checkpoint",
            sd15_checkpoint.name,
            "--out",
            tmp_path / "out2",
            *LONG,
        )
        deadline = time.monotonic() + 120
        while not pending(url) and time.monotonic() < deadline:  # queued behind the first's job
            assert second.poll() is None, second_err.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        assert pending(url)
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=90)
        gone = time.monotonic()
        code = second.wait(timeout=60)
        took = time.monotonic() - gone
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
    log = second_err.read_text(errors="replace")
    assert code == 1, log[-3000:]
    assert "went away during the run (connection refused" in log, log[-3000:]
    assert took < 30 and "Traceback" not in log


@pytest.fixture
def full_out(tmp_path):
    """``--out`` on a real, nearly full filesystem: a 512 KiB tmpfs with ~8 KiB free."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to make a real full disk: {done.stderr.strip()}")
    try:
        stat = os.statvfs(mount)
        (mount / "ballast").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 8 * 1024))
        yield mount / "out"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_out_leaves_nothing_half_written_and_says_so(full_out, answers_server):
    done = analogist(
        "--server",
        answers_server.url,
        "--checkpoint",
        checkpoint_name(0),
        "--out",
        full_out,
        *SMALL,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "the disk is full" in done.stderr and "Traceback" not in done.stderr
    for path in full_out.iterdir():  # what is there is whole: complete PNGs, no temporary file
        assert not path.name.startswith(".") and not path.name.endswith(".part")
        from PIL import Image

        with Image.open(path) as image:
            image.load()


def test_an_embedded_run_on_a_full_out_leaves_no_empty_log_and_no_traceback(
    full_out, sd15_checkpoint
):
    done = analogist("--checkpoint", sd15_checkpoint, "--out", full_out, *SMALL)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "the disk is full" in done.stderr
    assert "Traceback" not in done.stderr and "_JobsFailed" not in done.stderr
    log = full_out / "comfyui.log"
    assert not log.exists() or log.stat().st_size > 0
    assert not [p for p in full_out.iterdir() if p.name.startswith(".")]
