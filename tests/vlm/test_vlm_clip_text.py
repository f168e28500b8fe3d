"""clip_literal / plain_text: what a server writes becomes text (issue 23). The end-to-end
proof with ComfyUI's own tokenizer is in tests/nodes/test_gpt4v_faults.py."""

from __future__ import annotations

import pytest
from comfyui_analogist import analogist_vlm as vlm


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("(cat:1e38)", "\\(cat:1e38\\)"),
        ("((nested)) cat", "\\(\\(nested\\)\\) cat"),
        ("[dog]", "\\(dog\\)"),
        ("\\(sneaky:5)", "\\(sneaky:5\\)"),  # a server's own backslash cannot pair up
        ("embedding:x", "embedding :x"),
        ("a Embedding:bad, EMBEDDING:worse", "a Embedding :bad, EMBEDDING :worse"),
        ("red\x1b[31m cat\x1b]0;title\x07 hat", "red cat hat"),
        ("nul\x00 bidi\u202eevil zero\u200bwidth\ufeff", "nul bidievil zerowidth"),
        ("tab\there\u2028line", "tab here line"),
    ],
)
def test_clip_literal(answer, expected):
    assert vlm.clip_literal(answer) == expected


def test_plain_text_keeps_line_breaks_for_the_prompt_splitter():
    assert vlm.plain_text("one\x07\ntwo\u2029three") == "one\ntwo three"


def test_parsed_prompts_and_error_excerpts_hold_no_control_characters():
    assert vlm.parse_prompts("\x1b[2Jsmiling\u202e cat", 1, 5) == ["smiling cat"]
    assert vlm.excerpt("fake\r\x1b[1Aline") == "fake line"
