"""Run a shipped Analogist workflow headless: your A, A', B in, B' files out.

Two ways to reach ComfyUI:

* **embedded** (default): start the ComfyUI installed in this Python (``comfyui``) as a
  child process on a free loopback port, in a temporary workspace with this pack linked
  into ``custom_nodes`` and the checkpoint linked into ``models/checkpoints``; stop it at
  the end.
* **servers** (``--server URL``, repeatable): send the graph to running ComfyUI servers
  (with this pack installed and the checkpoint in their ``models/checkpoints``); a folder
  of B images is spread over them, one worker per server.

Either way the graph is the shipped UI workflow (``workflows/*.json``), converted to the
API prompt with the server's own ``/object_info``, so what runs is what an artist would
run by dragging that file into ComfyUI. Every input is checked before anything is queued.
"""

from __future__ import annotations

import errno
import functools
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..analogist_pixels.image_files import ImageFileError, upload_bytes
from .checkpoints import DOWNLOAD_HINT
from .comfy_api import ComfyClient, ServerError, printable
from .embedded import EmbeddedFailed, embedded_comfyui
from .graph import build_prompt, load_workflow
from .inputs import InputError, Settings, make_out
from .workflow_format import VIRTUAL_TYPES, WorkflowError

PACK_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Job:
    b: Path
    index: int


@dataclass
class Outcome:
    job: Job
    server: str
    files: list[Path] = field(default_factory=list)
    error: str | None = None


def upload(client: ComfyClient, path: Path, name: str, role: str, *, mask: bool = False) -> str:
    """``path`` on the server as the plain 8-bit RGB PNG Load Image reads the same way on
    every host (see :mod:`analogist_pixels.image_files`); ``name`` without suffix."""
    try:
        data = upload_bytes(path, role, mask=mask)
    except ImageFileError as exc:
        raise InputError(str(exc)) from None
    return client.upload_image(path, f"{name}.png", data=data)


def upload_b_region(client: ComfyClient, settings: Settings) -> dict[str, str]:
    if settings.b_region is None:
        return {}
    return {
        "b_region": upload(client, settings.b_region, "analogist_b_region", "--b-region", mask=True)
    }


def needed_nodes(settings: Settings) -> list[str]:
    """Every node type the run's graph uses (the shipped workflow's and what the runner adds)."""
    workflow = load_workflow(settings.workflow, settings.candidates)
    needed = {n.get("type") for n in workflow.get("nodes", [])} - set(VIRTUAL_TYPES) - {None}
    needed |= {
        "AnalogistGridCompose",
        "AnalogistSACPatch",
        "AnalogistCAMPatch",
        "AnalogistGridCrop",
    }
    if settings.b_region is not None:
        needed.add("LoadImageMask")
    if settings.examples:
        needed.add("AnalogistExamplePair")
    if settings.clip_vision is not None:
        needed.add("AnalogistRankCandidates")
    return sorted(needed)


def check_pack_identity(client: ComfyClient, info: dict, needed: list[str]) -> None:
    """The Analogist nodes the run uses must all come from one pack, this one's: another
    pack that registers an ``Analogist...`` id replaces ours without a word (the last one
    loaded wins). ComfyUI (0.3.x and later) names each node's module in ``python_module``
    (``custom_nodes.<folder>``); hosts that do not report it are not checked."""
    ours = {name: info[name].get("python_module") for name in info if name.startswith("Analogist")}
    if not all(isinstance(module, str) for module in ours.values()):
        return
    counts: dict[str, int] = {}
    for module in ours.values():
        counts[module] = counts.get(module, 0) + 1
    pack = max(counts, key=lambda m: (counts[m], m.startswith("custom_nodes.")))
    impostors = [
        f"{name} (from {printable(ours[name])})"
        for name in needed
        if name in ours and ours[name] != pack
    ]
    if impostors:
        raise ServerError(
            f"{client.url}: {', '.join(impostors)} is not this pack's node (the Analogist pack "
            f"is {printable(pack)}): another custom node pack registers the same node id and "
            "replaced ours. Remove or disable that pack in its custom_nodes and restart ComfyUI"
        )


def check_server_can_run(
    client: ComfyClient,
    info: dict,
    checkpoint: str,
    clip_vision: str | None = None,
    needed: list[str] | None = None,
) -> None:
    needed = list(
        needed
        or [
            "AnalogistGridCompose",
            "AnalogistSACPatch",
            "AnalogistCAMPatch",
            "AnalogistGridCrop",
            "CheckpointLoaderSimple",
        ]
    )
    if clip_vision is not None and "AnalogistRankCandidates" not in needed:
        needed.append("AnalogistRankCandidates")
    missing = [n for n in needed if n not in info]
    ours = [n for n in missing if n.startswith("Analogist")]
    if ours:
        raise ServerError(
            f"{client.url} does not have the Analogist nodes ({', '.join(ours)} missing): "
            "install this pack into its custom_nodes and restart it"
        )
    if missing:
        raise ServerError(
            f"{client.url} lacks ComfyUI's core node(s) {', '.join(missing)}, which the workflow "
            "uses: update that ComfyUI, or see its console for a node that failed to load"
        )
    check_pack_identity(client, info, needed)
    try:
        names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        if not isinstance(names, list):
            raise TypeError(names)
    except (KeyError, IndexError, TypeError):
        raise ServerError(
            f"{client.url}: its CheckpointLoaderSimple lists no checkpoints the usual way; is it "
            "a ComfyUI server?"
        ) from None
    if checkpoint not in names:
        # Inpainting models first: some ComfyUI builds also list downloadable models here.
        ranked = sorted(names, key=lambda n: "inpaint" not in n.lower())
        listed = ", ".join(ranked[:12]) + (", ..." if len(ranked) > 12 else "") or "none"
        raise ServerError(
            f"{client.url} has no checkpoint {checkpoint!r} (it lists: {listed}). Put the "
            f"file into that ComfyUI's models/checkpoints/.\n{DOWNLOAD_HINT}"
        )
    if clip_vision is not None:
        names = (
            info.get("CLIPVisionLoader", {})
            .get("input", {})
            .get("required", {})
            .get("clip_name", [[]])[0]
        )
        if clip_vision not in names:
            listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "none"
            raise ServerError(
                f"{client.url} has no CLIP vision model {clip_vision!r} (it lists: {listed}). Put "
                "the file into that ComfyUI's models/clip_vision/, or name one it lists with --clip-vision"
            )


# -- running -------------------------------------------------------------------------------
def run_job(
    client: ComfyClient,
    info: dict,
    settings: Settings,
    job: Job,
    uploaded: dict[str, str],
    progress: Progress | None = None,
) -> list[Path]:
    stem = f"{job.index:03d}_{job.b.stem}" if len(settings.b) > 1 else job.b.stem
    b_name = upload(client, job.b, f"analogist_b_{stem}", "--b")
    prompt = build_prompt(settings, info, {**uploaded, "b": b_name})
    prompt_id = client.queue(prompt)
    if progress is not None:
        progress.started(prompt_id, job)
    finished = client.wait(prompt_id)
    files = []
    for node_id, node in prompt.items():
        kind = node["class_type"]
        if kind == "AnalogistRankCandidates":
            files.append(save_scores(settings, stem, finished.outputs.get(node_id, {})))
        if kind not in ("SaveImage", "PreviewImage"):
            continue
        title = node.get("_meta", {}).get("title", "")
        label = (
            "b_prime"
            if kind == "SaveImage"
            else (
                "strip"
                if title.startswith("A |")
                else "labelled_grid"
                if "Labelled" in title
                else "candidate_rank"
                if title.startswith("All candidates")
                else f"preview{node_id}"
            )
        )
        for i, image in enumerate(finished.outputs.get(node_id, {}).get("images", [])):
            suffix = str(i + 1) if label == "candidate_rank" else f"_{i}" if i else ""
            target = settings.out / f"{stem}_{label}{suffix}.png"
            write_atomic(target, client.view(image))
            files.append(target)
    if not any("_b_prime" in f.name for f in files):
        raise ServerError(f"{client.url}: the run finished but saved no B' image")
    save_inputs(settings, job, stem)
    return files


def save_scores(settings: Settings, stem: str, output: dict) -> Path:
    """The ranking node's scores (``#batch index score``, best first) as ``<stem>_scores.txt``."""
    lines = output.get("text") or []
    if not lines:
        raise ServerError("the run finished but the ranking node reported no scores")
    target = settings.out / f"{stem}_scores.txt"
    write_atomic(target, ("\n".join(printable(line) for line in lines) + "\n").encode())
    return target


def write_atomic(target: Path, data: bytes) -> None:
    """``data`` into ``target`` whole or not at all: written under a temporary name in the
    same folder, then renamed over it (``os.replace``); a failure (a full disk) removes the
    temporary file and says so."""
    temp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except OSError as exc:
        try:
            temp.unlink()
        except OSError:
            pass
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise OSError(
            exc.errno,
            f"cannot write {target.name} into --out {target.parent}: "
            + (
                "the disk is full; free some space or choose another --out"
                if full
                else f"{exc.strerror or exc}"
            ),
        ) from None


def save_inputs(settings: Settings, job: Job, stem: str) -> None:
    """A, A', B beside B' as ``<stem>_a.png``, ``<stem>_a_prime.png``, ``<stem>_b.png``, so
    ``python -m analogist score`` can read the folder.

    Saved as what was sampled: the PNGs the runner uploads (EXIF orientation applied, 8-bit
    RGB), not the files' bytes; an EXIF-rotated B copied as is would stand sideways beside
    its upright B' (issue 23)."""
    for role, path, flag in (
        ("a", settings.a, "--a"),
        ("a_prime", settings.a_prime, "--a-prime"),
        ("b", job.b, "--b"),
    ):
        write_atomic(settings.out / f"{stem}_{role}.png", upload_bytes(path, flag))


class Progress:
    """One status line per finished job, with a bar: ``[####------] 4/10``; in between,
    the sampler's steps as the server reports them (``step 12/50``): rewritten in place on
    a terminal, otherwise a line at most every few seconds and at the last step."""

    WIDTH = 20
    QUIET_S = 5.0

    def __init__(self, total: int, stream=None):
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}  # prompt_id -> job
        self.last_step_line = 0.0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.open_line = False

    def bar(self) -> str:
        filled = self.WIDTH * self.done // self.total
        return f"[{'#' * filled}{'-' * (self.WIDTH - filled)}] {self.done}/{self.total}"

    def started(self, prompt_id: str, job: Job) -> None:
        with self.lock:
            self.jobs[prompt_id] = job

    def step(self, server: str, prompt_id: str, value: int, total: int) -> None:
        with self.lock:
            job = self.jobs.get(prompt_id)
            if job is None:
                return
            line = f"{self.bar()} {job.b.name}: step {value}/{total} ({server})"
            if self.tty:
                print(f"\r{line}\033[K", end="", file=self.stream, flush=True)
                self.open_line = True
                return
            now = time.monotonic()
            if value >= total or now - self.last_step_line >= self.QUIET_S:
                self.last_step_line = now
                print(line, file=self.stream, flush=True)

    def update(self, outcome: Outcome) -> None:
        with self.lock:
            self.done += 1
            status = (
                "ok"
                if outcome.error is None
                else (
                    "FAILED: " + printable((outcome.error.strip().splitlines() or [""])[-1][:160])
                )
            )
            start = "\r" if self.open_line else ""
            end = "\033[K" if self.open_line else ""
            self.open_line = False
            print(
                f"{start}{self.bar()} {outcome.job.b.name}: {status} ({outcome.server}){end}",
                file=self.stream,
                flush=True,
            )


def spread(
    jobs: list[Job], workers: dict[str, Callable[[Job], list[Path]]], progress: Progress
) -> list[Outcome]:
    """Run jobs on the workers (one thread per worker, each takes the next job when free)."""
    pending: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        pending.put(job)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def work(name: str, fn: Callable[[Job], list[Path]]) -> None:
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = Outcome(job, name, files=fn(job))
            except OSError as exc:
                text = exc.strerror if exc.errno and exc.strerror else str(exc)
                outcome = Outcome(job, name, error=text)
            except (ServerError, WorkflowError, InputError, KeyError, ValueError) as exc:
                outcome = Outcome(job, name, error=str(exc))
            with lock:
                outcomes.append(outcome)
            progress.update(outcome)

    threads = [threading.Thread(target=work, args=item, daemon=True) for item in workers.items()]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():  # short joins: a signal stops the run at once
                thread.join(0.5)
    except BaseException:
        while not pending.empty():  # the workers take no further job
            try:
                pending.get_nowait()
            except queue.Empty:
                break
        raise
    return sorted(outcomes, key=lambda o: o.job.index)


def prepare_server(client: ComfyClient, settings: Settings) -> dict:
    client.check()
    info = client.object_info()
    check_server_can_run(
        client, info, settings.checkpoint, settings.clip_vision, needed_nodes(settings)
    )
    return info


def upload_examples(client: ComfyClient, settings: Settings) -> dict[str, str]:
    """A and A' on the server, under names that carry a hash of their bytes (see
    :meth:`ComfyClient.upload_image`): runs sharing a server never swap inputs."""
    return {
        "a": upload(client, settings.a, "analogist_a", "--a"),
        "a_prime": upload(client, settings.a_prime, "analogist_a_prime", "--a-prime"),
        **upload_b_region(client, settings),
        **upload_example_pairs(client, settings),
    }


def upload_example_pairs(client: ComfyClient, settings: Settings) -> dict[str, str]:
    """Pairs 2..K on the server, as ``a2``, ``a2_prime``, ... (hashed names, as for A)."""
    names = {}
    for k, (a, a_prime) in enumerate(settings.examples, start=2):
        names[f"a{k}"] = upload(client, a, f"analogist_a{k}", f"--example {k} (A)")
        names[f"a{k}_prime"] = upload(
            client, a_prime, f"analogist_a{k}_prime", f"--example {k} (A')"
        )
    return names


def _run_one(client, info, settings, job, *, uploaded, progress) -> list[Path]:
    return run_job(client, info, settings, job, uploaded, progress)


def run_on_servers(settings: Settings, urls: list[str], stream=None) -> list[Outcome]:
    """Check every server, create --out, then run; on an interruption (Ctrl-C, SIGTERM)
    cancel what this run queued on each server before the exception goes on."""
    clients = [ComfyClient(url) for url in urls]
    infos = [prepare_server(client, settings) for client in clients]  # all able first
    make_out(settings.out)
    progress = Progress(len(settings.b), stream)
    workers: dict[str, Callable[[Job], list[Path]]] = {}
    try:
        for index, (client, info) in enumerate(zip(clients, infos, strict=True)):
            name = f"{client.url}#{index}" if urls.count(urls[index]) > 1 else client.url
            client.on_progress = functools.partial(progress.step, name)
            uploaded = upload_examples(client, settings)
            workers[name] = functools.partial(
                _run_one, client, info, settings, uploaded=uploaded, progress=progress
            )
        jobs = [Job(b, index) for index, b in enumerate(settings.b)]
        return spread(jobs, workers, progress)
    except BaseException:
        for client in clients:
            try:
                cancelled = client.cancel()
            except (ServerError, OSError, ValueError):
                continue
            if cancelled:
                print(
                    f"[analogist] cancelled {len(cancelled)} queued job(s) on {client.url}",
                    file=stream or sys.stderr,
                    flush=True,
                )
        raise
    finally:
        for client in clients:
            client.close()


def summarize(outcomes: list[Outcome], stream=None) -> int:
    """Print result paths (stdout) and failures (stderr); the exit code."""
    stream = stream or sys.stdout
    failed = [o for o in outcomes if o.error is not None]
    for outcome in outcomes:
        for path in outcome.files:
            print(path, file=stream, flush=True)
    if failed:
        print(f"\n{len(failed)} of {len(outcomes)} failed:", file=sys.stderr)
        for outcome in failed:
            lines = [printable(line) for line in (outcome.error or "").split("\n")]
            print(f"  {outcome.job.b}: " + "\n    ".join(lines), file=sys.stderr)
        return 1
    return 0


class _JobsFailed(Exception):
    def __init__(self, code: int):
        super().__init__(code)
        self.code = code


def main_run(settings: Settings, servers: list[str], log=None) -> int:
    """Run every job; ``--out`` is created only once the servers have passed their checks."""
    log = log or sys.stderr
    if servers:
        return summarize(run_on_servers(settings, servers, log))
    checkpoint = Path(settings.checkpoint)
    clip_vision = Path(settings.clip_vision) if settings.clip_vision else None
    try:
        with embedded_comfyui(
            checkpoint, log, keep_log=settings.out / "comfyui.log", clip_vision=clip_vision
        ) as url:
            settings.checkpoint = checkpoint.name
            if clip_vision is not None:
                settings.clip_vision = clip_vision.name
            code = summarize(run_on_servers(settings, [url], log))
            if code:
                raise _JobsFailed(code)  # so the embedded ComfyUI's log is kept
    except EmbeddedFailed as exc:
        if isinstance(exc.__cause__, _JobsFailed):
            print(str(exc).split("\n")[-1], file=sys.stderr, flush=True)
            return exc.__cause__.code
        raise
    except _JobsFailed as exc:  # the log could not be kept (a full --out): the summary said why
        return exc.code
    return code
