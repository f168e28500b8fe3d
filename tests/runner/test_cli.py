"""``python -m analogist run``: bad input gets a clear error before anything runs; jobs are
spread over servers with a failure summary. (End-to-end runs: tests/host/test_runner.py.)"""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from comfyui_analogist.analogist_cli.checkpoints import (
    FIRST_CONV,
    CheckpointError,
    check_inpainting_checkpoint,
    checkpoint_for,
)
from comfyui_analogist.analogist_cli.main import main
from comfyui_analogist.analogist_cli.runner import Job, Progress, spread, summarize

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "workflows" / "images"
A, A2, B = (EXAMPLES / f"analogist_example_{n}.png" for n in ("a", "a_prime", "b"))


def safetensors_with(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    import safetensors.torch

    safetensors.torch.save_file(tensors, str(path))
    return path


@pytest.fixture
def inpainting(tmp_path) -> Path:
    return safetensors_with(tmp_path / "inpaint.safetensors", {FIRST_CONV: torch.zeros(8, 9, 1, 1)})


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["run", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_missing_image_is_named(capsys, tmp_path, inpainting):
    code, out, err = cli(
        capsys, "--a", tmp_path / "nope.png", "--checkpoint", inpainting, "--out", tmp_path
    )
    assert code == 2 and "--a: file not found" in err and "nope.png" in err and not out


def test_unreadable_image_is_named(capsys, tmp_path, inpainting):
    bad = tmp_path / "b.png"
    bad.write_text("not an image")
    code, _, err = cli(capsys, "--b", bad, "--checkpoint", inpainting, "--out", tmp_path)
    assert code == 2 and "--b: cannot read" in err and str(bad) in err


def test_empty_b_folder_is_an_error(capsys, tmp_path, inpainting):
    (tmp_path / "bs").mkdir()
    code, _, err = cli(
        capsys, "--b", tmp_path / "bs", "--checkpoint", inpainting, "--out", tmp_path
    )
    assert code == 2 and "no images" in err


def test_without_checkpoint_it_says_what_to_download_and_where(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ANALOGIST_COMFYUI_DIR", str(tmp_path / "comfy"))
    code, _, err = cli(capsys, "--out", tmp_path)
    assert code == 2
    assert "sd-v1-5-inpainting.ckpt" in err and "runwayml/stable-diffusion-inpainting" in err
    assert "models/checkpoints" in err and "--checkpoint" in err
    assert str(tmp_path / "comfy" / "models" / "checkpoints") in err


def test_without_checkpoint_it_uses_the_inpainting_one_in_run_sh_folder(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "comfy" / "models" / "checkpoints"
    folder.mkdir(parents=True)
    safetensors_with(folder / "a-plain.safetensors", {FIRST_CONV: torch.zeros(8, 4, 1, 1)})
    inpaint = safetensors_with(
        folder / "b-inpainting.safetensors", {FIRST_CONV: torch.zeros(8, 9, 1, 1)}
    )
    monkeypatch.setenv("ANALOGIST_COMFYUI_DIR", str(tmp_path / "comfy"))
    assert checkpoint_for(None, []) == str(inpaint.resolve())
    assert str(inpaint) in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="no --checkpoint given"):
        checkpoint_for(None, ["http://127.0.0.1:1"])  # servers know their models by name


def test_a_plain_sd_checkpoint_is_refused_from_its_header(capsys, tmp_path):
    plain = safetensors_with(tmp_path / "v1-5.safetensors", {FIRST_CONV: torch.zeros(8, 4, 1, 1)})
    code, _, err = cli(capsys, "--checkpoint", plain, "--out", tmp_path)
    assert code == 2 and "takes 4 input channels" in err and "not an inpainting model" in err


def test_a_file_that_is_no_sd_checkpoint_is_refused(capsys, tmp_path):
    lora = safetensors_with(tmp_path / "lora.safetensors", {"lora_unet_x.alpha": torch.zeros(1)})
    code, _, err = cli(capsys, "--checkpoint", lora, "--out", tmp_path)
    assert code == 2 and "not a single-file Stable Diffusion" in err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a .safetensors file"):
        check_inpainting_checkpoint(junk)


@pytest.mark.parametrize("channels, ok", [(9, True), (4, False)])
def test_ckpt_files_are_read_without_loading_the_model(tmp_path, channels, ok):
    path = tmp_path / "model.ckpt"
    torch.save({"global_step": 1, "state_dict": {FIRST_CONV: torch.zeros(8, channels, 1, 1)}}, path)
    if ok:
        assert check_inpainting_checkpoint(path).unet_in_channels == 9
    else:
        with pytest.raises(CheckpointError, match=f"takes {channels} input channels"):
            check_inpainting_checkpoint(path)


def test_a_server_that_is_down_is_reported(capsys, tmp_path, inpainting):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = cli(
        capsys,
        "--checkpoint",
        inpainting,
        "--out",
        tmp_path / "out",
        "--server",
        f"http://127.0.0.1:{port}",
    )
    assert code == 2 and f"cannot reach ComfyUI at http://127.0.0.1:{port}" in err and not out


def test_bad_cell_and_prompt_with_vlm_are_refused(capsys, tmp_path, inpainting):
    code, _, err = cli(capsys, "--cell", 100, "--checkpoint", inpainting, "--out", tmp_path)
    assert code == 2 and "multiple of 64" in err
    code, _, err = cli(
        capsys, "--workflow", "vlm", "--prompt", "x", "--checkpoint", inpainting, "--out", tmp_path
    )
    assert code == 2 and "--prompt goes with --workflow manual" in err


def test_jobs_spread_over_workers_and_failures_are_summarized(tmp_path, capsys):
    seen: dict[str, list[int]] = {"s1": [], "s2": []}
    gate = threading.Barrier(2)

    def worker(name):
        def run(job: Job):
            if not seen[name]:
                gate.wait(timeout=5)  # both workers hold a job at the same time
            seen[name].append(job.index)
            time.sleep(0.01)
            if job.b.name == "bad.png":
                raise ValueError("node 12 (KSampler): out of memory")
            out = tmp_path / f"{job.b.stem}_b_prime.png"
            out.write_bytes(b"x")
            return [out]

        return run

    jobs = [Job(Path(f"{n}.png"), i) for i, n in enumerate(["b0", "b1", "bad", "b3", "b4"])]
    log = io.StringIO()
    outcomes = spread(jobs, {"s1": worker("s1"), "s2": worker("s2")}, Progress(len(jobs), log))
    assert [o.job.index for o in outcomes] == [0, 1, 2, 3, 4]
    assert seen["s1"] and seen["s2"], "both servers got work"
    assert sorted(seen["s1"] + seen["s2"]) == [0, 1, 2, 3, 4]
    assert "5/5" in log.getvalue() and "bad.png: FAILED" in log.getvalue()
    code = summarize(outcomes)
    out, err = capsys.readouterr()
    assert code == 1
    assert out.count("_b_prime.png") == 4
    assert "1 of 5 failed" in err and "bad.png: node 12 (KSampler): out of memory" in err


def test_the_comfyui_checkout_the_pack_lives_in_is_found(tmp_path):
    from comfyui_analogist.analogist_cli.embedded import host_comfyui

    pack = tmp_path / "ComfyUI" / "custom_nodes" / "comfyui-analogist"
    pack.mkdir(parents=True)
    assert host_comfyui(pack) is None  # no main.py: not a ComfyUI checkout
    (tmp_path / "ComfyUI" / "main.py").write_text("")
    assert host_comfyui(pack) == tmp_path / "ComfyUI"
    assert host_comfyui(ROOT) is None  # this repo is not inside custom_nodes


def test_launch_in_a_checkout_adds_the_checkpoint_folder_as_a_model_path(tmp_path, inpainting):
    from comfyui_analogist.analogist_cli.embedded import launch_args

    checkout = tmp_path / "ComfyUI"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    args, cwd = launch_args(workspace, inpainting, 8190, checkout)
    assert cwd == checkout and args[1] == str(checkout / "main.py")
    assert args[args.index("--input-directory") + 1] == str(workspace / "input")
    yaml = (workspace / "extra_model_paths.yaml").read_text()
    assert f'base_path: "{inpainting.parent}"' in yaml and "checkpoints: ." in yaml
    assert not (workspace / "custom_nodes").exists()  # the checkout has the pack already


# -- best of N (issue 13) -------------------------------------------------------------------


@pytest.fixture
def encoder(tmp_path) -> Path:
    return safetensors_with(tmp_path / "clip-vit-l.safetensors", {"w": torch.zeros(1)})


@pytest.mark.parametrize(
    "args, says",
    [
        (["--candidates", 4], "--candidates needs --clip-vision"),
        (["--clip-vision", "{encoder}"], "--clip-vision goes with --candidates N"),
        (
            ["--candidates", 1, "--clip-vision", "{encoder}"],
            "--candidates must be between 2 and 64",
        ),
        (
            ["--candidates", 65, "--clip-vision", "{encoder}"],
            "--candidates must be between 2 and 64",
        ),
        (
            ["--candidates", 4, "--clip-vision", "{encoder}", "--workflow", "vlm"],
            "--candidates goes with --workflow manual",
        ),
        (["--candidates", 4, "--clip-vision", "{missing}"], "--clip-vision: file not found"),
        (["--candidates", 4, "--clip-vision", "{image}"], "is not a model file"),
    ],
)
def test_candidate_options_are_checked_before_anything_runs(
    capsys, tmp_path, inpainting, encoder, args, says
):
    names = {"{encoder}": encoder, "{missing}": tmp_path / "nope.safetensors", "{image}": A}
    args = [names.get(a, a) if isinstance(a, str) else a for a in args]
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "--checkpoint", inpainting, "--out", out, *args)
    assert code == 2 and says in err, err
    assert not stdout and not out.exists()


def test_best_of_n_prompt_samples_n_and_scores_with_the_given_encoder():
    """The runner's graph is the shipped best-of-N workflow with N and the encoder set."""
    import copy

    from comfyui_analogist.analogist_cli.graph import build_prompt
    from comfyui_analogist.analogist_cli.inputs import Settings
    from support.workflows import workflow_builder

    info = copy.deepcopy(workflow_builder().node_definitions())  # the host's own definitions
    info["CLIPVisionLoader"]["input"]["required"]["clip_name"][0] = ["my-encoder.safetensors"]
    settings = Settings(
        a=A,
        a_prime=A2,
        b=[B],
        out=Path("out"),
        checkpoint="inpaint.safetensors",
        prompt="a red square, best quality, extremely detailed",
        seed=7,
        candidates=6,
        clip_vision="my-encoder.safetensors",
    )
    prompt = build_prompt(settings, info, {"a": "a.png", "a_prime": "ap.png", "b": "b.png"})
    by_type = {}
    for node in prompt.values():
        by_type.setdefault(node["class_type"], []).append(node["inputs"])
    assert [n["amount"] for n in by_type["RepeatLatentBatch"]] == [6]
    titles = {v.get("_meta", {}).get("title") for v in prompt.values()}
    assert (
        "6 candidates" in titles and "B' (best of 6)" in titles and "B' (best of 4)" not in titles
    )
    assert [n["clip_name"] for n in by_type["CLIPVisionLoader"]] == ["my-encoder.safetensors"]
    assert [n["seed"] for n in by_type["KSampler"]] == [7]
    assert sorted(n["image"] for n in by_type["LoadImage"]) == ["a.png", "ap.png", "b.png"]
    (rank,) = by_type["AnalogistRankCandidates"]
    assert rank["top_k"] == 1
    texts = [n["text"] for n in by_type["CLIPTextEncode"]]
    assert settings.prompt in texts


def test_launch_gives_the_embedded_comfyui_the_clip_vision_model(tmp_path, inpainting, encoder):
    from comfyui_analogist.analogist_cli.embedded import launch_args

    workspace = tmp_path / "ws"
    for sub in ("custom_nodes", "models/checkpoints"):  # as embedded_comfyui makes them
        (workspace / sub).mkdir(parents=True)
    launch_args(workspace, inpainting, 8190, None, encoder)
    link = workspace / "models" / "clip_vision" / encoder.name
    assert link.is_symlink() and link.resolve() == encoder.resolve()
    # In a ComfyUI checkout: an extra model path, read by the host's own loader.
    checkout = tmp_path / "ComfyUI"
    launch_args(workspace, inpainting, 8190, checkout, encoder)
    yaml = workspace / "extra_model_paths.yaml"
    assert sorted(extra_paths_read_by_host(yaml)) == sorted(
        [("checkpoints", str(inpainting.parent)), ("clip_vision", str(encoder.parent))]
    )


def extra_paths_read_by_host(yaml: Path) -> list[tuple[str, str]]:
    """What the host's extra_model_paths loader adds, in a fresh interpreter (it changes
    process-wide folder lists)."""
    import json
    import os
    import subprocess
    import sys

    probe = """
import json, sys
added = []
try:
    import folder_paths
    from utils.extra_config import load_extra_path_config
except ImportError:
    from comfy.cmd import folder_paths
    from comfy.cmd.extra_model_paths import load_extra_path_config
folder_paths.add_model_folder_path = lambda kind, path, *a, **k: added.append((kind, path))
load_extra_path_config(sys.argv[1])
print(json.dumps(added))
"""
    host = os.environ.get("ANALOGIST_COMFYUI_HOST", "")
    env = {**os.environ, "PYTHONPATH": host}
    done = subprocess.run(
        [sys.executable, "-c", probe, str(yaml)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [
        (kind, os.path.normpath(path))
        for kind, path in json.loads(done.stdout.strip().splitlines()[-1])
    ]


# -- faults and bad input (issue 16) --------------------------------------------------------


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width x height`` (a decompression bomb's header) without the
    gigabytes of pixels: Pillow refuses it from the header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_png_is_refused_cleanly(capsys, tmp_path, inpainting):
    bomb = png_header_only(tmp_path / "huge.png", 20000, 20000)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "--b", bomb, "--checkpoint", inpainting, "--out", out)
    assert code == 2 and "--b:" in err and "too large" in err and str(bomb) in err
    assert "Traceback" not in err and not stdout and not out.exists()


@pytest.mark.parametrize(
    "url, says",
    [
        ("htp:/x y", "contains spaces"),
        ("http://[::1", "not a valid URL"),
        ("ftp://127.0.0.1:8188", "scheme must be http"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://", "names no host"),
    ],
)
def test_an_invalid_server_url_is_refused_cleanly(capsys, tmp_path, inpainting, url, says):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "--server", url, "--checkpoint", "x.ckpt", "--out", out)
    assert code == 2 and says in err and repr(url) in err, err
    assert "Traceback" not in err and "did not answer with JSON" not in err
    assert not stdout and not out.exists()


def test_a_server_url_with_a_password_is_refused_without_repeating_it(capsys, tmp_path, inpainting):
    from support.fake_secrets import make_secret

    password = make_secret("")
    code, stdout, err = cli(
        capsys,
        "--server",
        f"http://artist:{password}@127.0.0.1:8188",
        "--checkpoint",
        "x.ckpt",
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and "user name or password" in err and password not in err + stdout


def test_out_that_is_a_file_is_refused_before_anything_runs(capsys, tmp_path, inpainting):
    taken = tmp_path / "results"
    taken.write_text("I am a file")
    code, _, err = cli(capsys, "--checkpoint", inpainting, "--out", taken)
    assert code == 2 and f"--out: {taken} is a file" in err
    code, _, err = cli(capsys, "--checkpoint", inpainting, "--out", taken / "sub")
    assert code == 2 and "cannot be created" in err and "Traceback" not in err
    assert taken.read_text() == "I am a file"


def test_out_that_is_not_writable_is_refused(capsys, tmp_path, inpainting):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code, _, err = cli(capsys, "--checkpoint", inpainting, "--out", locked / "new")
        assert code == 2 and "no write permission" in err and "Traceback" not in err
    finally:
        locked.chmod(0o700)


def test_out_is_not_created_when_a_check_fails(capsys, tmp_path, inpainting):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "not-yet"
    code, _, err = cli(
        capsys, "--server", f"http://127.0.0.1:{port}", "--checkpoint", "x.ckpt", "--out", out
    )
    assert code == 2 and "cannot reach" in err
    assert not out.exists()  # the server check failed: nothing was created


def test_a_truncated_safetensors_is_caught_by_the_pre_check_with_its_path(capsys, tmp_path):
    whole = safetensors_with(
        tmp_path / "whole.safetensors", {FIRST_CONV: torch.zeros(320, 9, 3, 3)}
    )
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    assert check_inpainting_checkpoint(whole).unet_in_channels == 9
    code, _, err = cli(capsys, "--checkpoint", cut, "--out", tmp_path / "out")
    assert code == 2 and str(cut) in err and "truncated" in err and "download it again" in err
    header_cut = tmp_path / "header_cut.safetensors"
    header_cut.write_bytes(whole.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        check_inpainting_checkpoint(header_cut)


def test_workspaces_of_runners_that_died_unclean_are_swept(tmp_path):
    """SIGKILL leaves no chance to clean up: the next run removes such a workspace, and
    only such a one."""
    import subprocess
    import sys

    from comfyui_analogist.analogist_cli.embedded import sweep_stale_workspaces

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live, foreign = (
        tmp_path / f"analogist-comfyui-{n}" for n in ("stale", "live", "foreign")
    )
    for folder in (stale, live, foreign):
        (folder / "input").mkdir(parents=True)
    (stale / "runner.pid").write_text(str(dead.pid))
    (live / "runner.pid").write_text(str(__import__("os").getpid()))
    assert sweep_stale_workspaces(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()


def test_b_region_must_exist_and_be_at_bs_size(capsys, tmp_path, inpainting):
    from PIL import Image

    code, _, err = cli(
        capsys,
        "--b-region",
        tmp_path / "nope.png",
        "--checkpoint",
        inpainting,
        "--out",
        tmp_path / "out",
    )
    assert code == 2 and "--b-region: file not found" in err
    small = tmp_path / "region.png"
    Image.new("L", (100, 80), 255).save(small)
    code, _, err = cli(
        capsys, "--b-region", small, "--checkpoint", inpainting, "--out", tmp_path / "out"
    )
    assert (
        code == 2
        and "--b-region: region.png is 100x80 px but B analogist_example_b.png is 256x256 px" in err
    )
    assert not (tmp_path / "out").exists()


def test_example_pairs_are_checked_and_limited(capsys, tmp_path, inpainting):
    code, _, err = cli(
        capsys,
        "--example",
        A,
        tmp_path / "missing.png",
        "--checkpoint",
        inpainting,
        "--out",
        tmp_path,
    )
    assert code == 2 and "--example 2 (A'): file not found" in err and "missing.png" in err
    four = [arg for _ in range(4) for arg in ("--example", A, A2)]
    code, _, err = cli(capsys, *four, "--checkpoint", inpainting, "--out", tmp_path / "new")
    assert code == 2 and "at most 3 fit" in err and "square of the grid" in err
    assert not (tmp_path / "new").exists()


def test_the_runners_pair_limit_is_the_grid_nodes():
    from comfyui_analogist.analogist_cli.inputs import MAX_EXTRA_EXAMPLES
    from comfyui_analogist.analogist_pixels.layout import MAX_PAIRS

    assert MAX_EXTRA_EXAMPLES == MAX_PAIRS - 1
