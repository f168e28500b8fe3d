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

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints import DOWNLOAD_HINT, CheckpointError, check_inpainting_checkpoint
from .client import ComfyClient, ServerError
from .workflow_format import WorkflowError, nodes_of_type, set_widget, ui_to_api

PACK_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = {
    "manual": PACK_ROOT / "workflows" / "analogist_manual_prompt.json",
    "vlm": PACK_ROOT / "workflows" / "analogist.json",
}
# ``--candidates N``: the typed-prompt graph sampling N B' and keeping the best by CLIP.
BEST_OF_N_FILE = PACK_ROOT / "workflows" / "analogist_best_of_n.json"
MAX_CANDIDATES = 64  # every candidate is a full sampling run in one batch (memory grows with N)
CLIP_VISION_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt")
EXAMPLES = PACK_ROOT / "workflows" / "images"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
PACK_LINK_NAME = "comfyui-analogist"


class InputError(ValueError):
    """Bad user input: the message says which and how to fix it."""


@dataclass
class Settings:
    a: Path
    a_prime: Path
    b: list[Path]
    out: Path
    checkpoint: str  # a path (embedded) or the server's checkpoint name
    workflow: str = "manual"
    prompt: str | None = None
    steps: int | None = None
    cell: int | None = None
    seed: int | None = None
    denoise: float | None = None
    vlm_base_url: str | None = None
    vlm_model: str | None = None
    candidates: int | None = None  # sample this many B' and keep the best (needs clip_vision)
    clip_vision: str | None = None  # a path (embedded) or the server's CLIP vision model name
    b_region: Path | None = None  # --b-region: mask on B, white = may change
    # Example pairs 2..K (``--example A2 A2'``), after --a / --a-prime.
    examples: list[tuple[Path, Path]] = field(default_factory=list)


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


# -- input checks --------------------------------------------------------------------------
def check_image(path: Path, role: str) -> Path:
    path = Path(path).expanduser()
    if not path.exists():
        raise InputError(f"{role}: file not found: {path}")
    if not path.is_file():
        raise InputError(f"{role}: not a file: {path}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        raise InputError(
            f"{role}: {path} is too large to load safely ({exc}). Downscale it: the grid "
            "cells are at most 4096 px, so a few thousand pixels per side is plenty."
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise InputError(f"{role}: cannot read {path} as an image ({exc})") from exc
    return path


def check_out(path: Path) -> Path:
    """``--out`` must be a folder we can create or write into; nothing is created here
    (the folder appears only once every check has passed)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"--out: {path} is a file, not a folder; give a folder for the results")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"--out: {path} cannot be created: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "write into" if existing == path else f"create {path} in"
        raise InputError(f"--out: cannot {what} {existing} (no write permission); choose another folder")
    return path


def make_out(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out: cannot create the folder {path} ({exc.strerror or exc})") from None


def b_images(path: Path) -> list[Path]:
    """One image, or every image in a folder (sorted by name)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError(f"--b: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
        return [check_image(p, "--b") for p in found]
    return [check_image(path, "--b")]


def check_candidates(candidates: int | None, clip_vision: str | None, workflow: str,
                     servers: list[str]) -> str | None:
    """``--candidates N`` with ``--clip-vision``: checked together; the CLIP vision model as
    the run needs it (a local file's path embedded, the name the servers list otherwise)."""
    if candidates is None:
        if clip_vision is not None:
            raise InputError("--clip-vision goes with --candidates N (it scores the N candidates)")
        return None
    if not 2 <= candidates <= MAX_CANDIDATES:
        raise InputError(
            f"--candidates must be between 2 and {MAX_CANDIDATES} (all are sampled in one batch, "
            f"so memory grows with it), got {candidates}"
        )
    if workflow != "manual":
        raise InputError(
            "--candidates goes with --workflow manual (it runs workflows/analogist_best_of_n.json, "
            "the typed-prompt graph); give the B' prompt with --prompt"
        )
    if not clip_vision:
        raise InputError(
            "--candidates needs --clip-vision: a CLIP vision model file (e.g. the ViT-L/14 or "
            "ViT-H/14 image encoder IPAdapter uses, from ComfyUI/models/clip_vision) that "
            "scores each candidate by the paper's CLIP direction metric"
        )
    path = Path(clip_vision).expanduser()
    if servers and not path.exists():
        return clip_vision  # a name the servers are asked for
    if not path.is_file():
        raise InputError(
            f"--clip-vision: file not found: {path}. Give the path of a CLIP vision model file"
            + (" (with --server: a path, or the name in the servers' models/clip_vision)" if servers else "")
        )
    if path.suffix.lower() not in CLIP_VISION_SUFFIXES:
        raise InputError(
            f"--clip-vision: {path.name} is not a model file ({', '.join(CLIP_VISION_SUFFIXES)}); "
            "give a CLIP vision model such as CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
        )
    return path.name if servers else str(path.resolve())


# -- the graph -----------------------------------------------------------------------------
def load_workflow(kind: str, candidates: int | None = None) -> dict:
    if kind not in WORKFLOW_FILES:
        raise InputError(f"--workflow must be one of {sorted(WORKFLOW_FILES)}, got {kind!r}")
    if candidates is not None:
        return json.loads(BEST_OF_N_FILE.read_text())
    return json.loads(WORKFLOW_FILES[kind].read_text())


def set_candidates(workflow: dict, settings: Settings, info: dict) -> None:
    """The best-of-N graph: sample ``settings.candidates`` B' and score them with the
    given CLIP vision model."""
    (repeat,) = nodes_of_type(workflow, "RepeatLatentBatch")
    set_widget(workflow, repeat["id"], "amount", settings.candidates, info)
    repeat["title"] = f"{settings.candidates} candidates"
    for node in nodes_of_type(workflow, "SaveImage"):
        node["title"] = re.sub(r"best of \d+", f"best of {settings.candidates}", node.get("title", ""))
    (loader,) = nodes_of_type(workflow, "CLIPVisionLoader")
    set_widget(workflow, loader["id"], "clip_name", settings.clip_vision, info)


def build_prompt(settings: Settings, info: dict, images: dict[str, str]) -> dict:
    """The API prompt for one B: the shipped workflow with the user's inputs and options."""
    workflow = load_workflow(settings.workflow, settings.candidates)
    if settings.candidates is not None:
        set_candidates(workflow, settings, info)
    titles = {"A (example, before)": "a", "A' (example, after)": "a_prime", "B (to change)": "b"}
    for node in nodes_of_type(workflow, "LoadImage"):
        set_widget(workflow, node["id"], "image", images[titles[node["title"]]], info)
    for node in nodes_of_type(workflow, "CheckpointLoaderSimple"):
        set_widget(workflow, node["id"], "ckpt_name", settings.checkpoint, info)
    if settings.prompt is not None:
        if settings.workflow != "manual":
            raise InputError("--prompt goes with --workflow manual (the vlm workflow asks a model)")
        (positive,) = [n for n in nodes_of_type(workflow, "CLIPTextEncode")
                       if n.get("title", "").startswith("Positive")]
        set_widget(workflow, positive["id"], "text", settings.prompt, info)
    for node in nodes_of_type(workflow, "AnalogistGridCompose"):
        if settings.cell is not None:
            set_widget(workflow, node["id"], "cell_width", settings.cell, info)
            set_widget(workflow, node["id"], "cell_height", settings.cell, info)
    for node in nodes_of_type(workflow, "KSampler"):
        for name in ("steps", "seed", "denoise"):
            value = getattr(settings, name)
            if value is not None:
                set_widget(workflow, node["id"], name, value, info)
    for node in nodes_of_type(workflow, "AnalogistGPT4VPrompt"):
        if settings.vlm_base_url is not None:
            set_widget(workflow, node["id"], "base_url", settings.vlm_base_url, info)
        if settings.vlm_model is not None:
            set_widget(workflow, node["id"], "model", settings.vlm_model, info)
    prompt = add_example_pairs(ui_to_api(workflow, info), settings, images)
    return with_b_region(prompt, images.get("b_region"))


# -- region of interest on B (--b-region) ----------------------------------------------------
def check_b_region(path: Path | None, b: list[Path]) -> Path | None:
    """``--b-region``: an image at B's size (every B's, for a folder), white = may change."""
    if path is None:
        return None
    path = check_image(path, "--b-region")
    from PIL import Image

    with Image.open(path) as mask:
        size = mask.size
    for one in b:
        with Image.open(one) as image:
            if image.size != size:
                raise InputError(
                    f"--b-region: {path.name} is {size[0]}x{size[1]} px but B {one.name} is "
                    f"{image.size[0]}x{image.size[1]} px; draw the region on B at B's size "
                    "(white = may change, black = keep)"
                )
    return path


def upload_b_region(client: ComfyClient, settings: Settings) -> dict[str, str]:
    if settings.b_region is None:
        return {}
    suffix = settings.b_region.suffix.lower()
    return {"b_region": client.upload_image(settings.b_region, f"analogist_b_region{suffix}")}


def with_b_region(prompt: dict, image: str | None) -> dict:
    """The API prompt with the uploaded region mask (its red channel: white = may change)
    on every Grid Compose's ``b_region``; unchanged without one."""
    if image is None:
        return prompt
    composers = [key for key, node in prompt.items() if node["class_type"] == "AnalogistGridCompose"]
    if not composers:
        raise InputError("--b-region: this workflow has no Analogist Grid Compose to take the region")
    node_id = str(max(int(key) for key in prompt if str(key).isdigit()) + 1)
    prompt[node_id] = {
        "class_type": "LoadImageMask",
        "inputs": {"image": image, "channel": "red"},
        "_meta": {"title": "B's region (--b-region)"},
    }
    for key in composers:
        prompt[key]["inputs"]["b_region"] = [node_id, 0]
    return prompt


def check_server_can_run(client: ComfyClient, info: dict, checkpoint: str,
                         clip_vision: str | None = None) -> None:
    needed = ["AnalogistGridCompose", "AnalogistSACPatch", "AnalogistCAMPatch", "AnalogistGridCrop"]
    if clip_vision is not None:
        needed.append("AnalogistRankCandidates")
    missing = [n for n in needed if n not in info]
    if missing:
        raise ServerError(
            f"{client.url} does not have the Analogist nodes ({', '.join(missing)} missing): "
            "install this pack into its custom_nodes and restart it"
        )
    names = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    if checkpoint not in names:
        # Inpainting models first: some ComfyUI builds also list downloadable models here.
        ranked = sorted(names, key=lambda n: "inpaint" not in n.lower())
        listed = ", ".join(ranked[:12]) + (", ..." if len(ranked) > 12 else "") or "none"
        raise ServerError(
            f"{client.url} has no checkpoint {checkpoint!r} (it lists: {listed}). Put the "
            f"file into that ComfyUI's models/checkpoints/.\n{DOWNLOAD_HINT}"
        )
    if clip_vision is not None:
        names = info.get("CLIPVisionLoader", {}).get("input", {}).get("required", {}).get("clip_name", [[]])[0]
        if clip_vision not in names:
            listed = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "none"
            raise ServerError(
                f"{client.url} has no CLIP vision model {clip_vision!r} (it lists: {listed}). Put "
                "the file into that ComfyUI's models/clip_vision/, or name one it lists with --clip-vision"
            )


# -- running -------------------------------------------------------------------------------
def run_job(client: ComfyClient, info: dict, settings: Settings, job: Job, uploaded: dict[str, str],
            progress: Progress | None = None) -> list[Path]:
    stem = f"{job.index:03d}_{job.b.stem}" if len(settings.b) > 1 else job.b.stem
    b_name = client.upload_image(job.b, f"analogist_b_{stem}{job.b.suffix.lower()}")
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
        label = "b_prime" if kind == "SaveImage" else (
            "strip" if title.startswith("A |") else "labelled_grid" if "Labelled" in title
            else "candidate_rank" if title.startswith("All candidates") else f"preview{node_id}")
        for i, image in enumerate(finished.outputs.get(node_id, {}).get("images", [])):
            suffix = str(i + 1) if label == "candidate_rank" else f"_{i}" if i else ""
            target = settings.out / f"{stem}_{label}{suffix}.png"
            target.write_bytes(client.view(image))
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
    target.write_text("\n".join(str(line) for line in lines) + "\n")
    return target


def save_inputs(settings: Settings, job: Job, stem: str) -> None:
    """A, A', B beside B' as ``<stem>_a``, ``<stem>_a_prime``, ``<stem>_b`` (their own
    formats), so ``python -m analogist score`` can read the folder."""
    for role, path in (("a", settings.a), ("a_prime", settings.a_prime), ("b", job.b)):
        shutil.copyfile(path, settings.out / f"{stem}_{role}{path.suffix.lower()}")


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
            status = "ok" if outcome.error is None else (
                "FAILED: " + (outcome.error.strip().splitlines() or [""])[-1][:160])
            start = "\r" if self.open_line else ""
            end = "\033[K" if self.open_line else ""
            self.open_line = False
            print(f"{start}{self.bar()} {outcome.job.b.name}: {status} ({outcome.server}){end}",
                  file=self.stream, flush=True)


def spread(jobs: list[Job], workers: dict[str, Callable[[Job], list[Path]]], progress: Progress) -> list[Outcome]:
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
            except (ServerError, WorkflowError, InputError, OSError, KeyError, ValueError) as exc:
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
    check_server_can_run(client, info, settings.checkpoint, settings.clip_vision)
    return info


def upload_examples(client: ComfyClient, settings: Settings) -> dict[str, str]:
    """A and A' on the server, under names that carry a hash of their bytes (see
    :meth:`ComfyClient.upload_image`): runs sharing a server never swap inputs."""
    return {
        "a": client.upload_image(settings.a, f"analogist_a{settings.a.suffix.lower()}"),
        "a_prime": client.upload_image(settings.a_prime, f"analogist_a_prime{settings.a_prime.suffix.lower()}"),
        **upload_b_region(client, settings),
        **upload_example_pairs(client, settings),
    }


# -- several example pairs (--example A2 A2') -------------------------------------------------
# Grid Compose's own a, a_prime are pair 1; with 4 pairs at most (analogist_attn.layout's
# MAX_PAIRS; not imported: ``python -m analogist`` runs without the pack's torch modules,
# tests/runner/test_cli.py checks the two agree).
MAX_EXTRA_EXAMPLES = 3


def example_pairs(pairs: list | None) -> list[tuple[Path, Path]]:
    """``--example A A'`` values, checked: readable images, at most MAX_EXTRA_EXAMPLES."""
    pairs = list(pairs or [])
    if len(pairs) > MAX_EXTRA_EXAMPLES:
        raise InputError(
            f"--example: {len(pairs)} extra pairs, but at most {MAX_EXTRA_EXAMPLES} fit (4 "
            "pairs with --a/--a-prime): each pair adds a row of cells to the grid, and the "
            "UNet's attention time and memory grow with the square of the grid's size"
        )
    return [
        (check_image(Path(a), f"--example {k} (A)"), check_image(Path(a_prime), f"--example {k} (A')"))
        for k, (a, a_prime) in enumerate(pairs, start=2)
    ]


def upload_example_pairs(client: ComfyClient, settings: Settings) -> dict[str, str]:
    """Pairs 2..K on the server, as ``a2``, ``a2_prime``, ... (hashed names, as for A)."""
    names = {}
    for k, (a, a_prime) in enumerate(settings.examples, start=2):
        names[f"a{k}"] = client.upload_image(a, f"analogist_a{k}{a.suffix.lower()}")
        names[f"a{k}_prime"] = client.upload_image(a_prime, f"analogist_a{k}_prime{a_prime.suffix.lower()}")
    return names


def add_example_pairs(prompt: dict, settings: Settings, images: dict[str, str]) -> dict:
    """The API prompt with pairs 2..K: a LoadImage per image, an Analogist Example Pair
    chain into Grid Compose's ``examples``, and Grid Compose's layout into the GPT-4V
    node (so its request names every pair). Unchanged without --example."""
    if not settings.examples:
        return prompt
    (compose_id,) = [i for i, n in prompt.items() if n["class_type"] == "AnalogistGridCompose"]
    (load_a,) = [n for i, n in prompt.items()
                 if n["class_type"] == "LoadImage" and prompt[compose_id]["inputs"].get("a") == [i, 0]]
    next_id = max(int(i) for i in prompt) + 1
    chain = None
    for k in range(2, len(settings.examples) + 2):
        loads = []
        for role in (f"a{k}", f"a{k}_prime"):
            prompt[str(next_id)] = {
                "class_type": "LoadImage",
                "inputs": {**load_a["inputs"], "image": images[role]},
                "_meta": {"title": f"A{k}{chr(39) if role.endswith('prime') else ''} (example {k})"},
            }
            loads.append([str(next_id), 0])
            next_id += 1
        inputs = {"a": loads[0], "a_prime": loads[1]}
        if chain is not None:
            inputs["examples"] = chain
        prompt[str(next_id)] = {"class_type": "AnalogistExamplePair", "inputs": inputs,
                                "_meta": {"title": f"Example pair {k}"}}
        chain = [str(next_id), 0]
        next_id += 1
    prompt[compose_id]["inputs"]["examples"] = chain
    for node in prompt.values():
        if node["class_type"] == "AnalogistGPT4VPrompt":
            node["inputs"]["layout"] = [compose_id, 3]
    return prompt


def run_on_servers(settings: Settings, urls: list[str], stream=None) -> list[Outcome]:
    """Check every server, create --out, then run; on an interruption (Ctrl-C, SIGTERM)
    cancel what this run queued on each server before the exception goes on."""
    clients = [ComfyClient(url) for url in urls]
    infos = [prepare_server(client, settings) for client in clients]  # all able first
    make_out(settings.out)
    progress = Progress(len(settings.b), stream)
    workers = {}
    try:
        for index, (client, info) in enumerate(zip(clients, infos, strict=True)):
            name = f"{client.url}#{index}" if urls.count(urls[index]) > 1 else client.url
            client.on_progress = (lambda pid, value, total, name=name:
                                  progress.step(name, pid, value, total))
            uploaded = upload_examples(client, settings)
            workers[name] = (lambda job, c=client, i=info, u=uploaded:
                             run_job(c, i, settings, job, u, progress))
        jobs = [Job(b, index) for index, b in enumerate(settings.b)]
        return spread(jobs, workers, progress)
    except BaseException:
        for client in clients:
            try:
                cancelled = client.cancel()
            except (ServerError, OSError, ValueError):
                continue
            if cancelled:
                print(f"[analogist] cancelled {len(cancelled)} queued job(s) on {client.url}",
                      file=stream or sys.stderr, flush=True)
        raise
    finally:
        for client in clients:
            client.close()


# -- embedded ComfyUI ------------------------------------------------------------------------
def comfyui_command() -> list[str]:
    """The ``comfyui`` command of the registry packaging installed in this Python (0.0.1)."""
    script = Path(sys.executable).with_name("comfyui")
    if script.exists():
        return [str(script)]
    found = shutil.which("comfyui")
    if found:
        return [found]
    raise ServerError(
        "no ComfyUI to start: this pack is not inside a ComfyUI checkout's custom_nodes, "
        "ANALOGIST_COMFYUI_HOST names no ComfyUI folder, and this Python has no `comfyui` "
        "command. Run `bash scripts/analogy.sh` (it sets up ComfyUI 0.30.0 in .cache/hosts), "
        "or send the work to your own running ComfyUI with --server http://127.0.0.1:8188"
    )


def workspace_command(workspace: Path) -> list[str]:
    """Command that starts ComfyUI with ``workspace`` as its base folder.

    The base folder holds custom_nodes/, models/, input/, output/ and user/. The ComfyUI
    is the source tree named by ANALOGIST_COMFYUI_HOST (scripts/setup_env.sh sets up
    0.30.0 and the scripts name it), else the installed ``comfyui`` package.
    """
    tree = os.environ.get("ANALOGIST_COMFYUI_HOST")
    if tree:
        main = Path(tree) / "main.py"
        if not main.is_file():
            raise ServerError(f"ANALOGIST_COMFYUI_HOST={tree} is not a ComfyUI folder (it has no main.py)")
        # Its database otherwise lives in the tree's own user/ folder (shared, maybe read-only).
        database = "sqlite:///" + str((workspace / "user" / "comfyui.db").resolve())
        return [sys.executable, str(main), "--base-directory", str(workspace), "--database-url", database]
    return comfyui_command() + ["--cwd", str(workspace)]


def host_comfyui(pack_dir: Path | None = None) -> Path | None:
    """The ComfyUI checkout the pack is installed in (``<ComfyUI>/custom_nodes/<pack>``).

    Looks at the pack's path as imported (not symlink-resolved), so a pack linked into
    ``custom_nodes`` counts too.
    """
    pack_dir = pack_dir or Path(os.path.abspath(__file__)).parents[1]
    if pack_dir.parent.name == "custom_nodes" and (pack_dir.parent.parent / "main.py").is_file():
        return pack_dir.parent.parent
    return None


def launch_args(workspace: Path, checkpoint: Path, port: int, comfyui_dir: Path | None,
                clip_vision: Path | None = None) -> tuple[list[str], Path]:
    """Command line and working folder for a ComfyUI that sees the pack and ``checkpoint``
    (and ``clip_vision``, a CLIP vision model file, when given).

    * In a ComfyUI checkout: its own ``main.py`` with its custom nodes and models, plus the
      checkpoint's folder as an extra model path; inputs and outputs in ``workspace``.
    * Otherwise the ComfyUI of ``workspace_command`` with ``workspace`` as its base folder,
      this pack linked into its ``custom_nodes`` and the checkpoint into ``models/checkpoints``.
    """
    base = ["--listen", "127.0.0.1", "--port", str(port)]
    if comfyui_dir is not None:
        extra = workspace / "extra_model_paths.yaml"
        text = (
            "analogist_runner:\n"
            f"    base_path: {json.dumps(str(checkpoint.resolve().parent))}\n"
            "    checkpoints: .\n"
        )
        if clip_vision is not None:
            text += (
                "analogist_runner_clip_vision:\n"
                f"    base_path: {json.dumps(str(clip_vision.resolve().parent))}\n"
                "    clip_vision: .\n"
            )
        extra.write_text(text)
        args = [sys.executable, str(comfyui_dir / "main.py"), *base,
                "--input-directory", str(workspace / "input"),
                "--output-directory", str(workspace / "output"),
                "--temp-directory", str(workspace),
                "--extra-model-paths-config", str(extra)]
        return args, comfyui_dir
    pack = workspace / "custom_nodes" / PACK_LINK_NAME
    if not pack.exists():
        pack.symlink_to(PACK_ROOT, target_is_directory=True)
    model = workspace / "models" / "checkpoints" / checkpoint.name
    if not model.exists():
        model.symlink_to(checkpoint.resolve())
    if clip_vision is not None:
        encoder = workspace / "models" / "clip_vision" / clip_vision.name
        encoder.parent.mkdir(parents=True, exist_ok=True)
        if not encoder.exists():
            encoder.symlink_to(clip_vision.resolve())
    return workspace_command(workspace) + base, workspace


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _has_cuda() -> bool:
    probe = "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0


def _die_with_parent() -> None:
    """In the child before exec (Linux): get SIGTERM when the runner dies, even by SIGKILL,
    so no ComfyUI is ever left behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop_process(process: subprocess.Popen) -> None:
    """Terminate ComfyUI and anything it started (its own process group), then wait."""
    def send(sig: int) -> None:
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    if process.poll() is None:
        send(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            process.wait(timeout=10)
    send(signal.SIGKILL)  # stragglers in the group, if any


WORKSPACE_PREFIX = "analogist-comfyui-"
OWNER_FILE = "runner.pid"


def sweep_stale_workspaces(folder: Path | None = None) -> list[Path]:
    """Remove the temporary workspaces of runners that died without cleaning up (SIGKILL,
    a power cut): those whose ``runner.pid`` names a process that no longer exists.
    Their ComfyUI died with them (see ``_die_with_parent``). Returns what was removed."""
    folder = Path(folder or tempfile.gettempdir())
    removed = []
    for workspace in folder.glob(WORKSPACE_PREFIX + "*"):
        try:
            pid = int((workspace / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or still being set up
        try:
            os.kill(pid, 0)
            continue  # its runner is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        shutil.rmtree(workspace, ignore_errors=True)
        removed.append(workspace)
    return removed


class EmbeddedFailed(ServerError):
    """The run on the embedded ComfyUI failed; its log was kept (the message says where)."""


@contextmanager
def embedded_comfyui(
    checkpoint: Path, log=None, workspace: Path | None = None, comfyui_dir: Path | None = None,
    keep_log: Path | None = None, clip_vision: Path | None = None,
) -> Iterator[str]:
    """A ComfyUI child process with this pack and ``checkpoint``; yields its URL.

    ``comfyui_dir``: a ComfyUI checkout to start (default: the one the pack lives in, if
    any); otherwise the ``comfyui`` installed in this Python. The child runs in its own
    process group and is stopped, with its temporary workspace removed, however the
    block ends (an error, Ctrl-C, SIGTERM or SIGHUP turned into exceptions by the CLI).
    When the block fails with an ``Exception`` (not an interruption), ComfyUI's log is
    copied to ``keep_log`` first and the error says where it is.
    """
    comfyui_dir = comfyui_dir or host_comfyui()
    owned = workspace is None
    if owned:
        sweep_stale_workspaces()
    workspace = Path(workspace or tempfile.mkdtemp(prefix=WORKSPACE_PREFIX))
    if owned:
        (workspace / OWNER_FILE).write_text(str(os.getpid()))
    log_path = workspace / "comfyui.log"
    try:
        for sub in ("custom_nodes", "models/checkpoints", "input", "output", "temp", "user"):
            (workspace / sub).mkdir(parents=True, exist_ok=True)
        port = _free_port()
        args, cwd = launch_args(workspace, checkpoint, port, comfyui_dir, clip_vision)
        if not _has_cuda():
            args.append("--cpu")  # the registry's torch is a CUDA build; without a GPU say so
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        hf = workspace / "hf-cache"
        hf.mkdir(exist_ok=True)
        env.setdefault("HF_HUB_CACHE", str(hf))
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                args, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops ComfyUI itself
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                client = ComfyClient(url)
                deadline = time.monotonic() + 300
                if log:
                    print(f"[analogist] starting ComfyUI ({' '.join(args[:2])}) on {url}, log: {log_path}",
                          file=log, flush=True)
                while True:
                    if process.poll() is not None:
                        tail = log_path.read_text(errors="replace")[-3000:]
                        raise ServerError(f"ComfyUI exited with {process.returncode} while starting:\n{tail}")
                    try:
                        client.check()
                        break
                    except ServerError:
                        if time.monotonic() > deadline:
                            raise ServerError("ComfyUI did not start within 300 s") from None
                        time.sleep(0.5)
                yield url
            finally:
                _stop_process(process)
    except Exception as exc:
        kept = _keep_log(log_path, keep_log) if keep_log is not None else None
        if kept is not None:
            raise EmbeddedFailed(f"{exc}\nComfyUI's log: {kept}") from exc
        raise
    finally:
        if owned:
            shutil.rmtree(workspace, ignore_errors=True)


def _keep_log(log_path: Path, target: Path) -> Path | None:
    if not log_path.is_file():
        return None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, target)
    except OSError:
        return None
    return target


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
            print(f"  {outcome.job.b}: {outcome.error}", file=sys.stderr)
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
        with embedded_comfyui(checkpoint, log, keep_log=settings.out / "comfyui.log",
                              clip_vision=clip_vision) as url:
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
    return code


def run_sh_checkpoints() -> Path:
    """``models/checkpoints`` of the ComfyUI working folder that ``scripts/run.sh`` uses."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = Path(os.environ.get("ANALOGIST_COMFYUI_DIR") or cache / "analogist-comfyui")
    return base.expanduser() / "models" / "checkpoints"


def find_checkpoint(folder: Path) -> Path | None:
    """The first SD inpainting checkpoint in ``folder`` (by name), if any."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir()):
        try:
            check_inpainting_checkpoint(path)
        except CheckpointError:
            continue
        return path
    return None


def checkpoint_for(settings_checkpoint: str | None, servers: list[str], log=None) -> str:
    """The checkpoint argument checked for the mode: a local inpainting file, or a name.

    Without one (and without servers), the inpainting checkpoint in scripts/run.sh's
    ComfyUI folder is used, so both commands share one download.
    """
    if not settings_checkpoint:
        folder = run_sh_checkpoints()
        found = None if servers else find_checkpoint(folder)
        if found is None:
            raise CheckpointError(
                f"no --checkpoint given, and no inpainting checkpoint in {folder}.\n{DOWNLOAD_HINT}"
            )
        print(f"[analogist] using the checkpoint {found}", file=log or sys.stderr, flush=True)
        return str(found.resolve())
    path = Path(settings_checkpoint).expanduser()
    if servers:
        if path.exists():  # a local file: check it, the servers know it by its name
            check_inpainting_checkpoint(path)
        return path.name
    check_inpainting_checkpoint(path)
    return str(path.resolve())
