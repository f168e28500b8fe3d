"""``python -m analogist reversion`` as a user runs it: a subprocess on the goldens' folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import safetensors.torch
from support import reversion as goldens

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": ""}
    return subprocess.run(
        [sys.executable, "-m", "analogist", "reversion", *map(str, args)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_cli_trains_saves_and_refuses_to_overwrite(tiny_folder, tmp_path):
    out = tmp_path / "embeddings"
    common = ["--diffusers", tiny_folder, "--out", out, "--cpu", "--steps", "2", "--batch-size", "2",
              "--gradient-accumulation", "1", "--resolution", "64", "--repeats", "1", "--save-every", "1"]  # fmt: skip
    if os.environ.get("ANALOGIST_COMFYUI_HOST"):
        common += ["--comfyui", os.environ["ANALOGIST_COMFYUI_HOST"]]
    done = cli(goldens.GOLDENS / "exemplars", "--name", "rel", "--official-bin", *common)
    from comfyui_analogist.analogist_reversion.comfy_parts import host_backprop_problem

    if host_backprop_problem() is not None:  # ComfyUI 0.0.1: refused with the reason
        assert done.returncode == 2 and "Update ComfyUI" in done.stderr, done.stderr
        assert not (out / "rel.safetensors").exists()
        return
    assert done.returncode == 0, done.stderr
    assert "2/2" in done.stderr and "loss" in done.stderr
    assert "embedding:rel" in done.stdout
    saved = safetensors.torch.load_file(str(out / "rel.safetensors"))["clip_l"]
    assert saved.shape == (1, 32)
    assert (out / "rel-training" / "rel-step000001.safetensors").is_file()
    assert (out / "rel-training" / "learned_embeds.bin").is_file()
    before = (out / "rel.safetensors").read_bytes()
    again = cli(goldens.GOLDENS / "exemplars", "--name", "rel", *common)
    assert again.returncode == 2 and "already exists" in again.stderr and "new name" in again.stderr
    assert (out / "rel.safetensors").read_bytes() == before


def test_cli_names_an_empty_folder(tiny_folder, tmp_path):
    done = cli(
        tmp_path, "--name", "x", "--diffusers", tiny_folder, "--out", tmp_path / "e", "--cpu"
    )
    assert done.returncode == 2 and "holds no images" in done.stderr, done.stderr
