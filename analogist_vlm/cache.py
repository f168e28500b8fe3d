"""The answer cache: one JSON file per request, so re-queuing or restarting costs no call.

Bounded: an entry keeps the prompts and at most :data:`MAX_STORED_ANSWER` characters of
the raw answer; after each write the oldest entries go until at most
:data:`MAX_ENTRIES` files and :data:`MAX_BYTES` remain, with any ``.tmp-*`` file a
crashed writer left. A failed write (a full disk) removes its own temporary file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

from .request import CACHE_FORMAT

log = logging.getLogger("analogist.vlm")

MAX_ENTRIES = 2000
MAX_BYTES = 32 << 20
MAX_STORED_ANSWER = 16 << 10  # characters of the raw answer kept (for the curious)
MAX_ENTRY_BYTES = 4 * MAX_STORED_ANSWER  # an entry read back is at most this big
STALE_TMP_SECONDS = 600.0  # a .tmp-* file this old belongs to no live writer


class AnswerCache:
    """One JSON file per request key: ``<dir>/<sha256>.json``. Survives restarts."""

    def __init__(
        self, directory: Path, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BYTES
    ) -> None:
        self.directory = Path(directory)
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str, num_prompts: int) -> list[str] | None:
        path = self.path(key)
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:  # an old version stored answers whole
                log.warning("[Analogist] ignoring oversized cache entry %s", path)
                return None
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
            "answer": answer[:MAX_STORED_ANSWER],
            "model": model,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        tmp = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f, ensure_ascii=False, indent=1)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError as exc:  # a read-only or full disk costs money later, not the answer now
            log.warning(
                "[Analogist] could not write the prompt cache in %s: %s", self.directory, exc
            )
        finally:
            if tmp is not None:  # nothing half-written stays behind
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self.prune()

    def prune(self) -> None:
        """Oldest entries out until within the limits; stale temporary files out."""
        entries = []
        now = time.time()
        try:
            with os.scandir(self.directory) as listing:
                for item in listing:
                    try:
                        if not item.is_file(follow_symlinks=False):
                            continue
                        info = item.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if item.name.startswith(".tmp-"):
                        if now - info.st_mtime > STALE_TMP_SECONDS:
                            _remove(item.path)
                    elif item.name.endswith(".json"):
                        entries.append((info.st_mtime, info.st_size, item.path))
        except OSError:
            return
        count, total = len(entries), sum(size for _, size, _ in entries)
        if count <= self.max_entries and total <= self.max_bytes:
            return
        entries.sort()  # oldest first
        removed = 0
        for _, size, path in entries:
            if count <= self.max_entries and total <= self.max_bytes:
                break
            if _remove(path):
                count, total, removed = count - 1, total - size, removed + 1
        log.info("[Analogist] prompt cache: removed the %d oldest answer(s)", removed)


def _remove(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except OSError:
        return False
