"""Key-shaped secrets generated per run: no key-shaped literal lives in the repo, and a test
that finds one where it must not be cannot be fooled by a constant."""

from __future__ import annotations

import secrets


def make_secret(prefix: str = "sk-test-") -> str:
    return prefix + secrets.token_urlsafe(30)
