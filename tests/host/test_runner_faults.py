"""The runner under faults, through real ComfyUI processes and real signals (issue 16):
a stopped run leaves nothing running or behind, runs sharing a server never swap inputs,
a failed embedded run keeps its log, and the server's step progress is shown."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from support import runner
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "workflows" / "images"
LONG = ["--steps", "2000", "--cell", "64"]  # still sampling when the signal comes


def start_runner(tmp_path: Path, *args) -> tuple[subprocess.Popen, Path]:
    """``python -m analogist run`` as a child with its own TMPDIR; stderr goes to a file."""
    return runner.start_runner(tmp_path / "tmp", tmp_path / "runner.err", *args)


def wait_for(err: Path, text: str, process: subprocess.Popen, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = err.read_text(errors="replace")
        if text in log:
            return log
        if process.poll() is not None:
            raise AssertionError(
                f"the runner exited ({process.returncode}) before {text!r}:\n{log[-3000:]}"
            )
        time.sleep(0.3)
    process.kill()
    raise AssertionError(
        f"no {text!r} within {timeout} s:\n{err.read_text(errors='replace')[-3000:]}"
    )


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (from /proc; zombies excluded)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_stops_the_embedded_comfyui_and_removes_its_folder(tmp_path, sd15_checkpoint, sig):
    process, err = start_runner(
        tmp_path, "--checkpoint", sd15_checkpoint, "--out", tmp_path / "out", *LONG
    )
    try:
        wait_for(err, "step ", process)  # ComfyUI is up and sampling
        comfyui = descendants(process.pid)
        workspaces = list((tmp_path / "tmp").glob("analogist-comfyui-*"))
        assert comfyui and len(workspaces) == 1
        process.send_signal(sig)
        code = process.wait(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    log = err.read_text(errors="replace")
    assert code == 128 + sig, log[-3000:]
    assert f"stopped by {signal.Signals(sig).name}" in log and "Traceback" not in log
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in comfyui) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in comfyui if alive(pid)], "ComfyUI outlived the runner"
    assert not list((tmp_path / "tmp").glob("analogist-comfyui-*"))


def test_a_killed_runner_takes_its_comfyui_along_and_the_next_run_sweeps_its_folder(
    tmp_path, sd15_checkpoint
):
    """SIGKILL cannot be caught: ComfyUI still dies with the runner (parent-death signal),
    and the next run removes the workspace left behind."""
    from comfyui_analogist.analogist_cli.embedded import sweep_stale_workspaces

    process, err = start_runner(
        tmp_path, "--checkpoint", sd15_checkpoint, "--out", tmp_path / "out", *LONG
    )
    try:
        wait_for(err, "step ", process)
        comfyui = descendants(process.pid)
        assert comfyui
        process.kill()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in comfyui) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in comfyui if alive(pid)], "ComfyUI outlived a killed runner"
    left = list((tmp_path / "tmp").glob("analogist-comfyui-*"))
    assert len(left) == 1
    assert sweep_stale_workspaces(tmp_path / "tmp") == left and not left[0].exists()


def queue_of(server) -> tuple[list, list]:
    queue = server.get_json("/queue")
    return queue["queue_running"], queue["queue_pending"]


@pytest.fixture
def idle_server(comfy_server):
    """The shared server, idle before and after the test (a failed test leaves no work)."""

    def settle():
        comfy_server.post_json("/queue", {"clear": True})
        if queue_of(comfy_server)[0]:
            comfy_server.post_json("/interrupt", {})
        deadline = time.monotonic() + 60
        while any(queue_of(comfy_server)) and time.monotonic() < deadline:
            time.sleep(0.2)

    settle()
    yield comfy_server
    settle()


def test_ctrl_c_in_server_mode_cancels_what_the_run_queued(tmp_path, idle_server):
    folder = tmp_path / "bs"
    folder.mkdir()
    for name in ("one", "two", "three"):
        Image.open(EXAMPLES / "analogist_example_b.png").save(folder / f"{name}.png")
    # The same server twice: two workers, so one prompt runs and one waits in the queue.
    process, err = start_runner(
        tmp_path,
        "--server",
        idle_server.url,
        "--server",
        idle_server.url,
        "--checkpoint",
        checkpoint_name(0),
        "--b",
        folder,
        "--out",
        tmp_path / "out",
        *LONG,
    )
    try:
        wait_for(err, "step ", process)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running, pending = queue_of(idle_server)
            if running and pending:
                break
            time.sleep(0.2)
        ours = {item[1] for item in running + pending}
        assert len(ours) == 2, (running, pending)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    log = err.read_text(errors="replace")
    assert code == 130, log[-3000:]
    # The same server twice is two clients here: each cancels the one prompt it queued.
    assert sum(int(n) for n in re.findall(r"cancelled (\d+) queued job", log)) == 2, log[-3000:]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(queue_of(idle_server)):
        time.sleep(0.2)
    assert queue_of(idle_server) == ([], []), "the server still works for a run nobody will collect"
    history = idle_server.history()
    finished = [pid for pid in ours if pid in history]
    # The running one was interrupted. The waiting one never ran, unless the server started
    # it in the instant between the two clients' cancels (the first one's interrupt frees
    # the server): then it was interrupted too. No prompt of this run ran to the end.
    assert 1 <= len(finished) <= 2, finished
    for pid in finished:
        messages = [m[0] for m in history[pid]["status"]["messages"]]
        assert "execution_interrupted" in messages, (pid, messages)
        assert "execution_success" not in messages, (pid, messages)


def test_a_server_run_that_someone_else_is_using_is_not_interrupted(tmp_path, idle_server):
    """Cancelling interrupts only this run's prompt: another client's running prompt goes on."""
    from comfyui_analogist.analogist_cli.comfy_api import ComfyClient
    from comfyui_analogist.analogist_cli.graph import build_prompt
    from comfyui_analogist.analogist_cli.inputs import Settings
    from comfyui_analogist.analogist_cli.runner import prepare_server, upload_examples

    settings = Settings(
        a=EXAMPLES / "analogist_example_a.png",
        a_prime=EXAMPLES / "analogist_example_a_prime.png",
        b=[EXAMPLES / "analogist_example_b.png"],
        out=tmp_path,
        checkpoint=checkpoint_name(0),
        steps=2000,
        cell=64,
    )
    other, mine = ComfyClient(idle_server.url), ComfyClient(idle_server.url)
    info = prepare_server(other, settings)
    images = {**upload_examples(other, settings), "b": other.upload_image(settings.b[0], "b.png")}
    theirs = other.queue(build_prompt(settings, info, images))
    queued = mine.queue(build_prompt(settings, info, images))
    try:
        deadline = time.monotonic() + 60
        while queue_of(idle_server)[0] == [] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [item[1] for item in queue_of(idle_server)[0]] == [theirs]
        assert mine.cancel() == [queued]
        time.sleep(2)
        running, pending = queue_of(idle_server)
        assert [item[1] for item in running] == [theirs] and pending == []
    finally:
        other.cancel()
        deadline = time.monotonic() + 30
        while any(queue_of(idle_server)) and time.monotonic() < deadline:
            time.sleep(0.2)


def test_two_runs_on_one_server_each_use_their_own_inputs(tmp_path, idle_server):
    a = EXAMPLES / "analogist_example_a.png"
    flipped = tmp_path / "a_flipped" / "analogist_example_a.png"  # same file name, other pixels
    flipped.parent.mkdir()
    ImageOps.flip(Image.open(a)).save(flipped)
    runs = []
    for index, example in enumerate((a, flipped)):
        work = tmp_path / f"run{index}"
        work.mkdir()
        runs.append(
            (
                example,
                *start_runner(
                    work,
                    "--server",
                    idle_server.url,
                    "--checkpoint",
                    checkpoint_name(0),
                    "--a",
                    example,
                    "--out",
                    work / "out",
                    "--steps",
                    "3",
                    "--cell",
                    "64",
                ),
            )
        )
    for _, process, err in runs:
        assert process.wait(timeout=600) == 0, err.read_text(errors="replace")[-3000:]
        assert "step 3/3" in err.read_text()  # the server's progress, from its websocket
    used = set()
    for entry in idle_server.history().values():
        for node in entry["prompt"][2].values():
            if node["class_type"] == "LoadImage" and node.get("_meta", {}).get(
                "title", ""
            ).startswith("A ("):
                uploaded = idle_server.workspace / "input" / node["inputs"]["image"]
                used.add(Image.open(uploaded).convert("RGB").tobytes())
    # The runner uploads what a viewer shows (8-bit RGB PNG): compare pixels, not files.
    assert {Image.open(p).convert("RGB").tobytes() for p in (a, flipped)} <= used


def test_a_failed_embedded_run_keeps_comfyui_log_and_says_where(tmp_path, sd15_checkpoint):
    from support.comfy_server import free_port

    out = tmp_path / "out"
    process, err = start_runner(
        tmp_path,
        "--checkpoint",
        sd15_checkpoint,
        "--out",
        out,
        "--workflow",
        "vlm",
        "--vlm-base-url",
        f"http://127.0.0.1:{free_port()}/v1",
        "--steps",
        "1",
        "--cell",
        "64",
    )
    code = process.wait(timeout=600)
    log = err.read_text(errors="replace")
    assert code == 1, log[-3000:]
    assert f"ComfyUI's log: {out / 'comfyui.log'}" in log
    kept = (out / "comfyui.log").read_text(errors="replace")
    assert "AnalogistGPT4VPrompt" in kept or "Analogist" in kept
    assert not list((tmp_path / "tmp").glob("analogist-comfyui-*"))
