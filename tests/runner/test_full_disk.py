"""A full disk (issue 23): results are whole or absent, no empty log is left, and a full
temporary folder is named. On a real full filesystem: a small tmpfs, mounted for the
test (skipped where mounting is not permitted)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from comfyui_analogist.analogist_cli.comfy_api import ServerError
from comfyui_analogist.analogist_cli.embedded import _keep_log, check_free_space
from comfyui_analogist.analogist_cli.runner import write_atomic


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs at ``tmp_path/disk``; unmounted after the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs here to make a real full disk: {done.stderr.strip()}"
        )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Leave ~10 KiB free on the filesystem of ``folder``."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / "ballast").write_bytes(b"\0" * max(0, free - 10 * 1024))


def test_a_result_that_does_not_fit_leaves_nothing_half_written(small_disk):
    fill(small_disk)
    target = small_disk / "b_b_prime.png"
    with pytest.raises(OSError, match=r"cannot write b_b_prime.png into --out .*the disk is full"):
        write_atomic(target, os.urandom(64 * 1024))
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]  # no file, no .part


def test_a_result_that_fits_replaces_the_old_one_whole(small_disk):
    target = small_disk / "b_b_prime.png"
    target.write_bytes(b"old")
    write_atomic(target, b"new result")
    assert target.read_bytes() == b"new result"
    assert sorted(p.name for p in small_disk.iterdir()) == ["b_b_prime.png"]


def test_a_log_that_does_not_fit_is_not_left_empty_or_truncated(small_disk, tmp_path):
    log = tmp_path / "comfyui.log"
    log.write_bytes(b"x" * 64 * 1024)
    fill(small_disk)
    assert _keep_log(log, small_disk / "out" / "comfyui.log") is None
    assert not (small_disk / "out" / "comfyui.log").exists()
    assert [p.name for p in (small_disk / "out").iterdir()] == []


def test_a_full_temporary_folder_is_named_before_comfyui_starts(small_disk):
    fill(small_disk)
    with pytest.raises(
        ServerError, match=rf"the temporary folder {small_disk} has only 0 MB free.*TMPDIR"
    ):
        check_free_space(small_disk)
