"""The one error type of the VLM client, and how messages are kept free of secrets."""

from __future__ import annotations

import re

from .clip_text import plain_text


class VLMError(RuntimeError):
    """A failure the user can act on; the message is safe to show (no key, redacted)."""


_TOKENISH = re.compile(r"(?i)\b(sk-[a-z0-9_\-]{6,}|bearer\s+[a-z0-9_\-.=]{6,})")


def redact(text: str, secret: str | None = None) -> str:
    """``text`` without ``secret`` or anything that looks like a bearer token."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "<redacted>")
    return _TOKENISH.sub("<redacted>", text)


def excerpt(text: str, limit: int = 200) -> str:
    """``text`` on one line, without control characters (a server's text could clear the
    terminal or fake log lines), cut to ``limit`` characters."""
    text = " ".join(plain_text(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
