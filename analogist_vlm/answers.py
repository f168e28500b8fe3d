"""What came back: the model's answer checked and cut into clean prompts."""

from __future__ import annotations

import logging
import re
from typing import Any

from .clip_text import plain_text
from .errors import VLMError, excerpt

log = logging.getLogger("analogist.vlm")


_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_BULLET = re.compile(r"^(?:[-*•·–—+]\s+|\(?\d{1,2}[.):\]](?:\s+|$)|#\d{1,2}[.):]?\s+)")
_LABEL = re.compile(r"^(?:prompts?|answer|output|image\s+b['’]|b['’])\s*\d{0,2}\s*[:：]\s*", re.I)
_QUOTE_PAIRS = {
    '"': '"',
    "'": "'",
    "“": "”",
    "‘": "’",
    "«": "»",
    "`": "`",
    "„": "“",
    "*": "*",
    "_": "_",
}
_STRAY_QUOTES = '"“”„«»`'
_TRAILING = ".,;:!?。…"
_REFUSAL = re.compile(
    r"^(?:i['’]?m sorry|i am sorry|sorry\b|i can(?:not|['’]t)\b|i am unable|i['’]m unable|"
    r"i won['’]t\b|as an ai\b|unfortunately,? i\b)",
    re.I,
)


def clean_prompt(text: str) -> str:
    """Strip list markers, labels, quotes, emphasis and trailing punctuation."""
    previous = None
    text = " ".join(text.split())
    while text != previous:
        previous = text
        text = _BULLET.sub("", text).strip()
        text = _LABEL.sub("", text).strip()
        if len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
            text = text[1:-1].strip()
        text = text.strip(_STRAY_QUOTES).strip()
        text = text.rstrip(_TRAILING).strip()
    return text


def limit_words(prompt: str, max_words: int) -> str:
    words = prompt.split()
    if len(words) <= max_words:
        return prompt
    cut = clean_prompt(" ".join(words[:max_words]))
    log.warning(
        "[Analogist] the model's prompt has %d words, more than max_words=%d; cut to %r",
        len(words),
        max_words,
        cut,
    )
    return cut


def parse_prompts(answer: str, num_prompts: int, max_words: int) -> list[str]:
    """Split and clean the model's answer into exactly ``num_prompts`` prompts.

    One prompt: the first non-heading line, commas kept. Several: one per line when there
    are enough lines, else split on commas/semicolons. More than asked: the first ones,
    with a warning. Fewer than asked, empty or refused: :class:`VLMError`.
    """
    text = _THINK.sub("", plain_text(answer or "")).strip()
    if not text:
        raise VLMError(
            "the model returned an empty answer; try again with another seed, "
            "or check that the model accepts images"
        )
    if _REFUSAL.match(clean_prompt(text.splitlines()[0])):
        raise VLMError(
            f"the model refused to answer: {excerpt(text)!r}. "
            f"Try another model, seed or instruction."
        )

    lines = [line for line in text.splitlines() if line.strip()]
    # Drop a heading such as "Here are three prompts:" when content follows it.
    while len(lines) > 1 and lines[0].rstrip().endswith(":"):
        lines.pop(0)

    if num_prompts == 1:
        if len(lines) > 1:
            log.warning(
                "[Analogist] the model answered %d lines; using the first: %r",
                len(lines),
                lines[0].strip(),
            )
        candidates = [lines[0]]
    elif len(lines) >= num_prompts:
        candidates = lines
    else:
        candidates = re.split(r"[,;\n]", "\n".join(lines))

    prompts = [p for p in (clean_prompt(c) for c in candidates) if p]
    if not prompts:
        raise VLMError(f"the model's answer holds no usable prompt: {excerpt(text)!r}")
    if len(prompts) < num_prompts:
        raise VLMError(
            f"asked for {num_prompts} prompts, the model gave {len(prompts)}: {prompts!r}. "
            f"Change the seed to ask again, or lower num_prompts."
        )
    if len(prompts) > num_prompts:
        log.warning(
            "[Analogist] asked for %d prompts, the model gave %d; keeping the first %d",
            num_prompts,
            len(prompts),
            num_prompts,
        )
        prompts = prompts[:num_prompts]
    return [limit_words(p, max_words) for p in prompts]


def answer_text(completion: Any) -> str:
    """The assistant's text from a chat completion, or :class:`VLMError` saying what is wrong."""
    try:
        choices = _get(completion, "choices")
        if not choices:
            raise VLMError("the server's reply has no choices (malformed chat completion)")
        choice = choices[0]
        message = _get(choice, "message")
        finish = _get(choice, "finish_reason")
        refusal = _get(message, "refusal") if message is not None else None
    except VLMError:
        raise
    except Exception:
        raise VLMError(
            f"the server's reply is not a chat completion: {excerpt(str(completion))!r}"
        ) from None
    if refusal:
        raise VLMError(f"the model refused to answer: {excerpt(str(refusal))!r}")
    if finish == "content_filter":
        raise VLMError("the model's answer was withheld by the content filter")
    if message is None:
        raise VLMError("the server's reply has no message (malformed chat completion)")
    content = _get(message, "content")
    if isinstance(content, list):  # some servers answer with content parts
        content = " ".join(str(_get(part, "text") or "") for part in content)
    if content is None:
        raise VLMError("the model returned an empty answer (no content)")
    if not isinstance(content, str):
        raise VLMError(f"the server's reply content is not text: {type(content).__name__}")
    return content


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(name)
    if obj is None or isinstance(obj, (str, bytes, int, float)):
        raise TypeError(name)
    return getattr(obj, name, None)
