"""The answer cache: one JSON file per request, so re-queuing or restarting costs no call."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from .request import CACHE_FORMAT

log = logging.getLogger("analogist.vlm")


class AnswerCache:
    """One JSON file per request key: ``<dir>/<sha256>.json``. Survives restarts."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str, num_prompts: int) -> list[str] | None:
        path = self.path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("[Analogist] ignoring unreadable cache entry %s: %s", path, exc)
            return None
        prompts = entry.get("prompts") if isinstance(entry, dict) else None
        if (
            entry.get("format") != CACHE_FORMAT
            or not isinstance(prompts, list)
            or len(prompts) != num_prompts
            or not all(isinstance(p, str) and p.strip() for p in prompts)
        ):
            log.warning("[Analogist] ignoring malformed cache entry %s", path)
            return None
        return list(prompts)

    def put(self, key: str, prompts: list[str], answer: str, model: str) -> None:
        entry = {
            "format": CACHE_FORMAT,
            "prompts": prompts,
            "answer": answer,
            "model": model,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self.path(key))
        except OSError as exc:  # a read-only disk costs money later, not the answer now
            log.warning(
                "[Analogist] could not write the prompt cache in %s: %s", self.directory, exc
            )
