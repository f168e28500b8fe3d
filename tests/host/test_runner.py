"""``python -m analogist run`` end to end: its own embedded ComfyUI, and running servers."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import pytest
from PIL import Image, ImageOps
from support import runner
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "workflows" / "images"
SMALL = ["--steps", "1", "--cell", "64"]


analogist = partial(runner.analogist, "run")


def printed_paths(stdout: str) -> list[Path]:
    return [Path(line) for line in stdout.splitlines() if line.strip()]


def test_runner_starts_its_own_comfyui_and_saves_b_prime_for_the_examples(
    tmp_path, sd15_checkpoint
):
    out = tmp_path / "out"
    done = analogist("--checkpoint", sd15_checkpoint, "--out", out, *SMALL)
    assert done.returncode == 0, done.stderr[-4000:]
    paths = printed_paths(done.stdout)
    assert sorted(p.name for p in paths) == [
        "analogist_example_b_b_prime.png",
        "analogist_example_b_strip.png",
    ]
    assert all(p.parent == out and p.exists() for p in paths)
    by_name = {p.name: Image.open(p) for p in paths}
    assert by_name["analogist_example_b_b_prime.png"].size == (256, 256)  # B's own size
    assert by_name["analogist_example_b_strip.png"].size == (4 * 64, 64)
    assert "starting ComfyUI" in done.stderr and "1/1" in done.stderr


def test_runner_spreads_a_folder_of_b_over_servers(tmp_path, comfy_server):
    folder = tmp_path / "bs"
    folder.mkdir()
    b = Image.open(EXAMPLES / "analogist_example_b.png")
    b.save(folder / "green.png")
    ImageOps.mirror(b).resize((192, 128)).save(folder / "mirrored.png")
    out = tmp_path / "out"
    done = analogist(
        "--server",
        comfy_server.url,
        "--server",
        comfy_server.url,
        "--checkpoint",
        checkpoint_name(0),
        "--b",
        folder,
        "--out",
        out,
        "--prompt",
        "a triangle outline, best quality, extremely detailed",
        *SMALL,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = {p.name: p for p in printed_paths(done.stdout) if p.name.endswith("_b_prime.png")}
    assert sorted(results) == ["000_green_b_prime.png", "001_mirrored_b_prime.png"]
    assert Image.open(results["001_mirrored_b_prime.png"]).size == (192, 128)  # back to B's size
    assert "2/2" in done.stderr and "FAILED" not in done.stderr


def test_runner_names_a_checkpoint_the_server_does_not_have(tmp_path, comfy_server):
    done = analogist(
        "--server",
        comfy_server.url,
        "--checkpoint",
        "sd-v1-5-inpainting.ckpt",
        "--out",
        tmp_path,
        timeout=120,
    )
    assert done.returncode == 2
    assert "has no checkpoint 'sd-v1-5-inpainting.ckpt'" in done.stderr
    assert checkpoint_name(0) in done.stderr  # it lists what the server has
    assert not list(tmp_path.glob("*.png"))


def test_runner_names_a_clip_vision_model_the_server_does_not_have(tmp_path, comfy_server):
    done = analogist(
        "--server",
        comfy_server.url,
        "--checkpoint",
        checkpoint_name(0),
        "--candidates",
        2,
        "--clip-vision",
        "clip-vit-h.safetensors",
        "--out",
        tmp_path / "out",
        timeout=120,
    )
    assert done.returncode == 2
    assert "has no CLIP vision model 'clip-vit-h.safetensors'" in done.stderr
    assert "models/clip_vision" in done.stderr
    assert not (tmp_path / "out").exists()


def test_runner_starts_the_comfyui_checkout_the_pack_lives_in(tmp_path, sd15_checkpoint):
    """A checkout's main.py with the pack in its custom_nodes; the checkpoint stays where it
    is and arrives through an extra model path.

    On the current host the checkout is the real upstream ComfyUI 0.30.0 tree, with the pack
    linked into its custom_nodes as scripts/setup_env.sh (like a user) put it. The 2024 host
    has no checkout: a stand-in main.py starts the registry ComfyUI from its own folder, as
    upstream's main.py does.
    """
    from comfyui_analogist.analogist_cli.comfy_api import ComfyClient
    from comfyui_analogist.analogist_cli.embedded import embedded_comfyui

    tree = os.environ.get("ANALOGIST_COMFYUI_HOST")
    if tree:
        checkout = Path(tree)
        link = checkout / "custom_nodes" / "comfyui-analogist"
        assert link.is_dir(), f"scripts/setup_env.sh links the pack into {link}"
    else:
        checkout = tmp_path / "ComfyUI"
        (checkout / "custom_nodes").mkdir(parents=True)
        (checkout / "custom_nodes" / "comfyui-analogist").symlink_to(ROOT, target_is_directory=True)
        (checkout / "main.py").write_text(
            "import os, sys\n"
            "sys.argv[1:1] = ['--cwd', os.path.dirname(os.path.abspath(__file__))]\n"
            "from comfy.cmd.main import entrypoint\n"
            "entrypoint()\n"
        )
    workspace = tmp_path / "ws"
    with embedded_comfyui(sd15_checkpoint, workspace=workspace, comfyui_dir=checkout) as url:
        client = ComfyClient(url)
        info = client.object_info()
        stored = client.upload_image(EXAMPLES / "analogist_example_b.png", "b.png")
    assert "AnalogistSACPatch" in info
    assert (
        sd15_checkpoint.name in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
    )
    assert (workspace / "input" / stored).exists()  # inputs go to the runner's folder


def test_runner_keeps_the_best_of_n_candidates_by_the_clip_direction_score(
    tmp_path, sd15_checkpoint
):
    """``--candidates N --clip-vision FILE``: the embedded ComfyUI samples N B' in one batch,
    ranks them with the given encoder, saves the best as B' and all N best first, with the
    scores; A, A', B are saved beside them for ``python -m analogist score``."""
    import re

    import numpy as np
    from support.clip_vision import cached_clip_vision_file

    out = tmp_path / "out"
    done = analogist(
        "--checkpoint",
        sd15_checkpoint,
        "--out",
        out,
        *SMALL,
        "--candidates",
        3,
        "--clip-vision",
        cached_clip_vision_file(0),
    )
    assert done.returncode == 0, done.stderr[-4000:]
    names = sorted(p.name for p in printed_paths(done.stdout))
    stem = "analogist_example_b"
    # The strips are in sampling order (batch index i: _strip, _strip_1, _strip_2), the
    # index the scores name; the candidates best first.
    assert names == sorted(
        [
            f"{stem}_b_prime.png",
            f"{stem}_strip.png",
            f"{stem}_strip_1.png",
            f"{stem}_strip_2.png",
            f"{stem}_scores.txt",
        ]
        + [f"{stem}_candidate_rank{k}.png" for k in (1, 2, 3)]
    )
    (line,) = (out / f"{stem}_scores.txt").read_text().splitlines()
    ranked = [(int(i), float(s)) for i, s in re.findall(r"#(\d+) (-?\d+\.\d+)", line)]
    assert sorted(i for i, _ in ranked) == [0, 1, 2]
    scores = [s for _, s in ranked]
    assert scores == sorted(scores, reverse=True)

    def pixels(name):
        return np.asarray(Image.open(out / name).convert("RGB"), dtype=np.int16)

    best = pixels(f"{stem}_b_prime.png")
    assert best.shape == (256, 256, 3)  # B's own size
    assert np.array_equal(best, pixels(f"{stem}_candidate_rank1.png"))
    assert any(np.abs(pixels(f"{stem}_candidate_rank{k}.png") - best).max() > 0 for k in (2, 3))
    assert sorted(p.name for p in out.glob(f"{stem}_a*")) == [
        f"{stem}_a.png",
        f"{stem}_a_prime.png",
    ]
    assert (out / f"{stem}_b.png").exists()


def test_runner_b_region_changes_b_only_inside_the_mask(tmp_path, comfy_server):
    import numpy as np

    mask = tmp_path / "my region.png"
    region = np.zeros((256, 256), bool)
    region[140:230, 30:120] = True  # the triangle's lower left corner
    Image.fromarray(region.astype(np.uint8) * 255).save(mask)
    out = tmp_path / "out"
    done = analogist(
        "--server",
        comfy_server.url,
        "--checkpoint",
        checkpoint_name(0),
        "--out",
        out,
        "--b-region",
        mask,
        *SMALL,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (result,) = [p for p in printed_paths(done.stdout) if p.name.endswith("_b_prime.png")]
    got = np.asarray(Image.open(result).convert("RGB"), np.int16)
    b = np.asarray(Image.open(EXAMPLES / "analogist_example_b.png").convert("RGB"), np.int16)
    near = np.zeros_like(region)
    near[140 - 4 : 230 + 4, 30 - 4 : 120 + 4] = True  # Grid Crop's default feather: 4 px
    # B's own pixels outside (SaveImage truncates 255 * x: k may come back as k - 1).
    assert np.abs(got - b)[~near].max() <= 1
    assert np.abs(got - b)[region].mean() > 10


def test_runner_adds_example_pairs_as_grid_rows(tmp_path, comfy_server):
    """--example A2 A2' (twice): three pairs, so the strip holds 8 cells (A1, A1', A2, A2',
    A3, A3', B, B') and B' comes back at B's size."""
    a2 = tmp_path / "a2.png"
    a2p = tmp_path / "a2p.png"
    ImageOps.mirror(Image.open(EXAMPLES / "analogist_example_a.png")).save(a2)
    ImageOps.mirror(Image.open(EXAMPLES / "analogist_example_a_prime.png")).save(a2p)
    out = tmp_path / "out"
    done = analogist(
        "--server",
        comfy_server.url,
        "--checkpoint",
        checkpoint_name(0),
        "--out",
        out,
        "--example",
        a2,
        a2p,
        "--example",
        EXAMPLES / "analogist_example_a.png",
        EXAMPLES / "analogist_example_a_prime.png",
        "--prompt",
        "a triangle outline, best quality, extremely detailed",
        *SMALL,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    by_name = {p.name: Image.open(p) for p in printed_paths(done.stdout)}
    assert by_name["analogist_example_b_strip.png"].size == (8 * 64, 64)
    assert by_name["analogist_example_b_b_prime.png"].size == (256, 256)
