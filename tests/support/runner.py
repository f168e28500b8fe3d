"""``python -m analogist`` as a child process of the host tests, run from the repo root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def runner_env(**extra: str) -> dict[str, str]:
    """This environment, offline for the Hugging Face Hub and unbuffered, plus ``extra``."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **extra}


def analogist(
    command: str, *args, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """``python -m analogist <command> <args>`` to its end, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "analogist", command, *map(str, args)],
        cwd=ROOT,
        env=runner_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_runner(temp: Path, err: Path, *args) -> tuple[subprocess.Popen, Path]:
    """``python -m analogist run <args>`` started in the background, with ``temp`` (made here)
    as its TMPDIR and its stderr going to the file ``err``."""
    temp.mkdir(exist_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-m", "analogist", "run", *map(str, args)],
        cwd=ROOT,
        env=runner_env(TMPDIR=str(temp)),
        stdout=subprocess.DEVNULL,
        stderr=open(err, "wb"),
    )
    return process, err
