"""A private ComfyUI for one run: started as a child process on a free loopback port in a
temporary workspace, and always stopped (its folder removed) at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .comfy_api import ComfyClient, ServerError

OWNER_FILE = "runner.pid"
WORKSPACE_PREFIX = "analogist-comfyui-"
PACK_ROOT = Path(__file__).resolve().parents[1]


PACK_LINK_NAME = "comfyui-analogist"


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
            raise ServerError(
                f"ANALOGIST_COMFYUI_HOST={tree} is not a ComfyUI folder (it has no main.py)"
            )
        # Its database otherwise lives in the tree's own user/ folder (shared, maybe read-only).
        database = "sqlite:///" + str((workspace / "user" / "comfyui.db").resolve())
        return [
            sys.executable,
            str(main),
            "--base-directory",
            str(workspace),
            "--database-url",
            database,
        ]
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


def launch_args(
    workspace: Path,
    checkpoint: Path | None,
    port: int,
    comfyui_dir: Path | None,
    clip_vision: Path | None = None,
    models: dict[str, Path] | None = None,
) -> tuple[list[str], Path]:
    """Command line and working folder for a ComfyUI that sees the pack and ``checkpoint``
    (and ``clip_vision``, a CLIP vision model file, when given; ``models``: more files, each
    for a model folder by name, e.g. ``{"mimicbrush": Path(".../mimicbrush.bin")}``).

    * In a ComfyUI checkout: its own ``main.py`` with its custom nodes and models, plus the
      checkpoint's folder as an extra model path; inputs and outputs in ``workspace``.
    * Otherwise the ComfyUI of ``workspace_command`` with ``workspace`` as its base folder,
      this pack linked into its ``custom_nodes`` and the checkpoint into ``models/checkpoints``.
    """
    base = ["--listen", "127.0.0.1", "--port", str(port)]
    files = dict(models or {})
    if checkpoint is not None:
        files["checkpoints"] = checkpoint
    if clip_vision is not None:
        files["clip_vision"] = clip_vision
    if comfyui_dir is not None:
        extra = workspace / "extra_model_paths.yaml"
        text = ""
        for folder, path in files.items():
            entry = "analogist_runner" if folder == "checkpoints" else f"analogist_runner_{folder}"
            text += (
                f"{entry}:\n"
                f"    base_path: {json.dumps(str(path.resolve().parent))}\n"
                f"    {folder}: .\n"
            )
        extra.write_text(text)
        args = [
            sys.executable,
            str(comfyui_dir / "main.py"),
            *base,
            "--input-directory",
            str(workspace / "input"),
            "--output-directory",
            str(workspace / "output"),
            "--temp-directory",
            str(workspace),
            "--extra-model-paths-config",
            str(extra),
        ]
        return args, comfyui_dir
    pack = workspace / "custom_nodes" / PACK_LINK_NAME
    if not pack.exists():
        pack.symlink_to(PACK_ROOT, target_is_directory=True)
    for folder, path in files.items():
        model = workspace / "models" / folder / path.name
        model.parent.mkdir(parents=True, exist_ok=True)
        if not model.exists():
            model.symlink_to(path.resolve())
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
    checkpoint: Path | None,
    log=None,
    workspace: Path | None = None,
    comfyui_dir: Path | None = None,
    keep_log: Path | None = None,
    clip_vision: Path | None = None,
    models: dict[str, Path] | None = None,
) -> Iterator[str]:
    """A ComfyUI child process with this pack and ``checkpoint`` (and ``models``: more files
    by model folder, see :func:`launch_args`); yields its URL.

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
        check_free_space(Path(tempfile.gettempdir()))
        try:
            workspace = Path(tempfile.mkdtemp(prefix=WORKSPACE_PREFIX))
        except OSError as exc:
            raise ServerError(
                f"cannot create the runner's ComfyUI folder in {tempfile.gettempdir()} "
                f"({exc.strerror or exc}); free some space there or set TMPDIR to another folder"
            ) from None
        try:
            (workspace / OWNER_FILE).write_text(str(os.getpid()))
        except OSError as exc:
            shutil.rmtree(workspace, ignore_errors=True)
            raise ServerError(
                f"cannot write into the temporary folder {workspace.parent} ({exc.strerror or exc}); "
                "free some space there or set TMPDIR to another folder"
            ) from None
    assert workspace is not None  # made above when not given
    workspace = Path(workspace)
    log_path = workspace / "comfyui.log"
    try:
        for sub in ("custom_nodes", "models/checkpoints", "input", "output", "temp", "user"):
            (workspace / sub).mkdir(parents=True, exist_ok=True)
        port = _free_port()
        args, cwd = launch_args(workspace, checkpoint, port, comfyui_dir, clip_vision, models)
        if not _has_cuda():
            args.append("--cpu")  # the registry's torch is a CUDA build; without a GPU say so
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        hf = workspace / "hf-cache"
        hf.mkdir(exist_ok=True)
        env.setdefault("HF_HUB_CACHE", str(hf))
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops ComfyUI itself
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                client = ComfyClient(url)
                deadline = time.monotonic() + 300
                if log:
                    print(
                        f"[analogist] starting ComfyUI ({' '.join(args[:2])}) on {url}, log: {log_path}",
                        file=log,
                        flush=True,
                    )
                while True:
                    if process.poll() is not None:
                        tail = log_path.read_text(errors="replace")[-3000:]
                        raise ServerError(
                            f"ComfyUI exited with {process.returncode} while starting:\n{tail}"
                        )
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
    """Copy the log to ``target`` whole, or leave nothing (a full disk leaves no empty or
    truncated log): copied under a temporary name, then renamed."""
    if not log_path.is_file():
        return None
    temp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, temp)
        os.replace(temp, target)
    except OSError:
        try:
            temp.unlink()
        except OSError:
            pass
        return None
    return target


# The embedded ComfyUI keeps the uploaded inputs, its outputs and previews in its workspace.
MIN_FREE_BYTES = 64 * 1024 * 1024


def check_free_space(folder: Path) -> None:
    """A clear error, before anything starts, when the temporary folder is (nearly) full;
    otherwise the first upload fails as a bare "HTTP 500"."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < MIN_FREE_BYTES:
        raise ServerError(
            f"the temporary folder {folder} has only {free // (1024 * 1024)} MB free; the runner's "
            f"ComfyUI keeps its inputs and outputs there and needs at least "
            f"{MIN_FREE_BYTES // (1024 * 1024)} MB. Free some space, or set TMPDIR to a folder "
            "with room"
        )
