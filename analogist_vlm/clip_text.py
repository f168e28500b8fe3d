"""What a server writes reaches the text encoder as text, never as prompt syntax.

ComfyUI's tokenizer (``comfy/sd1_clip.py``, ``SDTokenizer.tokenize_with_weights``, the
same in 0.0.1 and 0.30) reads three kinds of syntax in a prompt:

* ``(words)`` weights by 1.1 and ``(words:w)`` by ``w``, any float: ``(cat:1e38)`` made the
  conditioning infinite and the sampled grid NaN. ``\\(`` and ``\\)`` are its escapes for a
  literal parenthesis (``escape_important``), so every parenthesis is escaped; a ``:``
  weight is only read inside unescaped parentheses, so no ``:`` is left that can weigh;
* ``embedding:NAME`` at the start or after whitespace loads a textual-inversion file from
  the user's embeddings folder. The space put after ``embedding`` stops that and changes
  no CLIP token (CLIP's tokenizer splits ``:`` off a word either way);
* ``[words]`` is not ComfyUI syntax but A1111's (de-emphasis), which some packs' encoders
  read; brackets become escaped parentheses, which every encoder takes literally.

Terminal escape sequences are removed whole, then control and format characters (ESC, NUL,
the bidi overrides U+202A-U+202E and U+2066-U+2069, zero-width characters, the BOM) are
removed: they can rewrite a terminal or a
log line and mean nothing to CLIP; line and paragraph separators become spaces.
"""

from __future__ import annotations

import re
import unicodedata

_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})
_SPACES = frozenset({"\t", "\n", "\r", "\v", "\f", "\x85", "\u2028", "\u2029"})
# Terminal escape sequences whole (CSI ``ESC [ ... letter``, OSC ``ESC ] ... BEL``, and
# two-character ones), so no ``[2J`` is left behind when ESC itself is removed.
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
_EMBEDDING = re.compile(r"(?i)embedding:")
_ESCAPES = {"(": "\\(", ")": "\\)", "[": "\\(", "]": "\\)"}


def plain_text(text: str) -> str:
    """``text`` without control, format or unassigned characters; line breaks kept as such,
    other separators (tab, U+2028, ...) as spaces."""
    out = []
    for char in _ANSI.sub("", text):
        if char == "\n":
            out.append(char)
        elif char in _SPACES:
            out.append(" ")
        elif unicodedata.category(char) not in _REMOVED_CATEGORIES:
            out.append(char)
    return "".join(out)


def clip_literal(text: str) -> str:
    """``text`` as a prompt ComfyUI's tokenizer reads literally (see the module docstring).

    Backslashes are dropped first: a ``\\`` the server put before a parenthesis would
    otherwise pair with the escape added here.
    """
    text = " ".join(plain_text(text).split()).replace("\\", "")
    text = "".join(_ESCAPES.get(char, char) for char in text)
    return _EMBEDDING.sub(lambda m: m.group(0)[:-1] + " :", text)
