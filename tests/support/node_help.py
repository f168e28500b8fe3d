"""The per-node help pages (``web/docs/<NodeId>.md``) and their generator
(``scripts/build_node_help.py``), imported as a module."""

from __future__ import annotations

import importlib
import re
import sys
from functools import cache
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@cache
def help_builder():
    """``scripts/build_node_help.py`` (the folder holds only that script and shell scripts,
    so it can sit on sys.path)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.append(str(SCRIPTS))
    return importlib.import_module("build_node_help")


def artist_part(page: str) -> str:
    """The hand-written top of a page (everything before the generated part)."""
    marker = help_builder().BEGIN
    return page[: page.index(marker)] if marker in page else page


def plain_words(text: str) -> str:
    """Text with markdown emphasis and code marks removed and whitespace collapsed."""
    return " ".join(re.sub(r"[*`]", "", text).split())
