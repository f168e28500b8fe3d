"""Ask a vision-language model for the B' text prompt, over any OpenAI-compatible API.

Host-independent (no ``comfy`` import): the ComfyUI glue lives in ``nodes/gpt4v.py``.
The ``openai`` package is imported only when a request is actually sent, so this module
loads without it.

What happens on :meth:`VLMClient.ask`:

1. The request's cache key (sha256 of the PNG bytes, model, rendered instruction,
   ``num_prompts``, ``max_words``, base URL and seed; never the API key) names a JSON file
   in the cache directory. A valid entry answers the request with no network call.
2. Otherwise the API key is looked up (see :func:`find_api_key`), one chat-completions
   request is sent with the image as a ``data:image/png;base64,...`` URL, and timeouts,
   429, 408 and 5xx are retried with exponential backoff a bounded number of times.
3. The answer is cleaned and split into prompts (:func:`parse_prompts`); an empty,
   refused or malformed answer raises :class:`VLMError`. Only good answers are cached.

Secrets: the key lives in an :class:`ApiKey` whose ``repr`` hides it, is never logged,
and is redacted (with anything that looks like a bearer token) from every error message.
Errors are raised ``from None`` so the openai exception, whose text may quote the
server's reply, is not chained into ComfyUI's traceback log.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

log = logging.getLogger("analogist.vlm")

DEFAULT_MODEL = "gpt-4o"
OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_HOST = "api.openai.com"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
# Sent to a non-OpenAI server when no key was found for it: local servers (Ollama,
# LM Studio, vLLM without --api-key) accept any bearer token, and the client needs one.
PLACEHOLDER_KEY = "not-needed"
MAX_PROMPTS = 10
MAX_WORDS = 75  # CLIP reads 77 tokens; longer prompts are cut by the text encoder anyway
CACHE_FORMAT = 1

# The paper's request (Analogist, textual_prompting.py): a lead-in naming the task, then
# one sentence asking for the prompt(s). ``{request}`` renders that sentence for the
# chosen counts, word for word the paper's for 1 prompt and for 3.
PAPER_LEAD_IN = (
    "Please help me with the image analogy task: take an image A and its transformation A', "
    "and provide any image B to produce an output B' that is analogous to A'. "
    "Or, more succinctly: A : A' :: B : B'."
)
DEFAULT_INSTRUCTION = PAPER_LEAD_IN + " {request}"
PLACEHOLDERS = ("{request}", "{num_prompts}", "{max_words}")

_NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)


class VLMError(RuntimeError):
    """A failure the user can act on; the message is safe to show (no key, redacted)."""


# --------------------------------------------------------------------------- instruction


def request_sentence(num_prompts: int, max_words: int) -> str:
    """The paper's closing request for ``num_prompts`` prompts of at most ``max_words``."""
    if num_prompts == 1:
        return (
            f"You should give me the most possible text prompt of image B' "
            f"with no more than {max_words} words."
        )
    count = _NUMBER_WORDS[num_prompts] if num_prompts < len(_NUMBER_WORDS) else str(num_prompts)
    example = ", ".join(f"prompt{i}" for i in range(1, num_prompts + 1))
    return (
        f"You should give me {count} most possible text prompts of image B', each prompt "
        f"should contain no more than {max_words} words. Please separate the prompts with "
        f"comma and format your answer as follows: {example}"
    )


def render_instruction(template: str, num_prompts: int, max_words: int) -> str:
    """Fill ``{request}``, ``{num_prompts}`` and ``{max_words}``; other braces stay as typed.

    Plain replacement rather than ``str.format`` so a user's instruction may contain other
    braces (a JSON example, say) without breaking.
    """
    text = template.replace("{request}", request_sentence(num_prompts, max_words))
    text = text.replace("{num_prompts}", str(num_prompts)).replace("{max_words}", str(max_words))
    return text.strip()


# --------------------------------------------------------------------------- image


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an ``[H, W, C]`` uint8 array (C = 1, 3 or 4), with no metadata."""
    from PIL import Image

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise VLMError(
            f"the image must be [height, width, 1|3|4] uint8, got {pixels.dtype} {tuple(pixels.shape)}"
        )
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode=mode)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# --------------------------------------------------------------------------- base URL


def normalize_base_url(base_url: str) -> str:
    """The URL requests go to: empty means OpenAI's API; trailing slashes dropped.

    The ``OPENAI_BASE_URL`` environment variable is deliberately ignored: the graph
    alone says where the image is sent.
    """
    url = (base_url or "").strip().rstrip("/")
    if not url:
        return OPENAI_BASE_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VLMError(
            f"base_url must be an http(s) URL such as http://127.0.0.1:11434/v1 (Ollama) or "
            f"empty for OpenAI; got {display_url(url)!r}"
        )
    return url


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to print."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", "")) or "(empty)"
    except ValueError:
        return "(unparseable URL)"


def is_openai_url(url: str) -> bool:
    return (urlsplit(url).hostname or "").lower() == OPENAI_HOST


# --------------------------------------------------------------------------- API key


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class ApiKey:
    """An API key and where it came from. ``repr`` and ``str`` never show the key."""

    value: str = field(repr=False)
    origin: str
    placeholder: bool = False

    def __str__(self) -> str:
        return f"API key from {self.origin}"


def key_file_for(env_name: str, key_dir: Path | None) -> Path | None:
    """The key file read when the environment variable is unset: ``<env name>.txt``."""
    if key_dir is None:
        return None
    return key_dir / f"{(env_name or DEFAULT_KEY_ENV).lower()}.txt"


def check_env_name(env_name: str) -> str:
    """Accept the *name* of an environment variable; refuse anything that may be a key.

    A key pasted here would be saved in every workflow and image, so the error never
    repeats the value.
    """
    name = (env_name or "").strip()
    if not name:
        return ""
    looks_like_key = len(name) >= 32 and "_" not in name
    if not _ENV_NAME.match(name) or looks_like_key:
        raise VLMError(
            "api_key_env must be the NAME of an environment variable (like OPENAI_API_KEY), "
            "not the key itself. The value given is not shown because it may be a secret: "
            "clear that field, since it is saved in the workflow and in every image's metadata."
        )
    return name


def find_api_key(env_name: str, key_dir: Path | None, base_url: str) -> ApiKey:
    """Find the key for ``base_url``: environment variable, then key file, never the graph.

    * OpenAI's API (empty ``base_url``): the variable named ``env_name``, else the file
      ``<key_dir>/<env_name lower-cased>.txt``; none found is an error that says how to
      provide one or how to use a local server instead.
    * Any other server: the same lookup, except that the OpenAI key (``OPENAI_API_KEY``)
      is never sent to a non-OpenAI host, because a shared workflow could point
      ``base_url`` anywhere. With no key, :data:`PLACEHOLDER_KEY` is sent: local servers
      need none.
    """
    name = check_env_name(env_name)
    url = normalize_base_url(base_url)
    official = is_openai_url(url)
    key_file = key_file_for(name, key_dir)

    if not official and (name or DEFAULT_KEY_ENV) == DEFAULT_KEY_ENV:
        log.info(
            "[Analogist] not sending the OpenAI key to %s; set api_key_env to a variable "
            "holding that server's key if it needs one",
            display_url(url),
        )
        return ApiKey(
            PLACEHOLDER_KEY,
            f"no key sent ({DEFAULT_KEY_ENV} goes only to {OPENAI_HOST})",
            placeholder=True,
        )

    if name:
        value = os.environ.get(name, "").strip()
        if value:
            return ApiKey(
                _check_key(value, f"environment variable {name}"), f"environment variable {name}"
            )
    if key_file is not None and key_file.is_file():
        value = _read_key_file(key_file)
        if value:
            return ApiKey(_check_key(value, f"file {key_file}"), f"file {key_file}")

    if not official:
        return ApiKey(
            PLACEHOLDER_KEY,
            f"no key found (environment variable {name or '-'}, file {key_file or '-'})",
            placeholder=True,
        )

    where = (
        f"the file {key_file}"
        if key_file
        else ("a key file (ComfyUI's user directory could not be found, so none was read)")
    )
    env_hint = f"set the environment variable {name} before starting ComfyUI, or " if name else ""
    raise VLMError(
        f"no OpenAI API key found. To use OpenAI, {env_hint}save the key alone in {where}; "
        f"keys are never taken from the workflow. To use a local OpenAI-compatible server "
        f"instead (Ollama, LM Studio, vLLM), set base_url, e.g. http://127.0.0.1:11434/v1 for "
        f"Ollama, and a vision model it serves; local servers need no key."
    )


def _read_key_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VLMError(
            f"could not read the key file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    if os.name == "posix":
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                log.warning(
                    "[Analogist] the key file %s is readable by other users; "
                    "consider: chmod 600 %s",
                    path,
                    path,
                )
        except OSError:
            pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def _check_key(value: str, origin: str) -> str:
    # A key that cannot go in an HTTP header would make the HTTP library raise an error
    # quoting the header, key included; refuse it here, without showing it.
    if not value.isascii() or not value.isprintable() or " " in value:
        raise VLMError(
            f"the API key in {origin} contains spaces, line breaks or non-ASCII "
            f"characters; it is not shown. Check that the key was copied whole."
        )
    return value


_TOKENISH = re.compile(r"(?i)\b(sk-[a-z0-9_\-]{6,}|bearer\s+[a-z0-9_\-.=]{6,})")


def redact(text: str, secret: str | None = None) -> str:
    """``text`` without ``secret`` or anything that looks like a bearer token."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "<redacted>")
    return _TOKENISH.sub("<redacted>", text)


# --------------------------------------------------------------------------- request


@dataclass(frozen=True)
class VLMRequest:
    """One question to the model. ``instruction`` is already rendered."""

    image_png: bytes = field(repr=False)
    model: str
    instruction: str
    num_prompts: int = 1
    max_words: int = 5
    base_url: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise VLMError("model is empty: name a vision-capable model, e.g. gpt-4o")
        if not self.instruction.strip():
            raise VLMError("instruction is empty: the model needs to be told what to describe")
        if not 1 <= self.num_prompts <= MAX_PROMPTS:
            raise VLMError(f"num_prompts must be 1..{MAX_PROMPTS}, got {self.num_prompts}")
        if not 1 <= self.max_words <= MAX_WORDS:
            raise VLMError(f"max_words must be 1..{MAX_WORDS}, got {self.max_words}")
        normalize_base_url(self.base_url)

    @property
    def url(self) -> str:
        return normalize_base_url(self.base_url)

    def cache_key(self) -> str:
        return cache_key(
            image_sha256=hashlib.sha256(self.image_png).hexdigest(),
            model=self.model,
            instruction=self.instruction,
            num_prompts=self.num_prompts,
            max_words=self.max_words,
            base_url=self.base_url,
            seed=self.seed,
        )

    def messages(self) -> list[dict[str, Any]]:
        # Text then image, as in the paper's request.
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.instruction},
                    {"type": "image_url", "image_url": {"url": png_data_url(self.image_png)}},
                ],
            }
        ]


def cache_key(
    *,
    image_sha256: str | None,
    model: str,
    instruction: str,
    num_prompts: int,
    max_words: int,
    base_url: str,
    seed: int,
) -> str:
    """sha256 over everything that changes the answer; the API key is not part of it."""
    try:
        url = normalize_base_url(base_url)
    except VLMError:
        url = (base_url or "").strip()
    payload = {
        "format": CACHE_FORMAT,
        "image_sha256": image_sha256,
        "model": model.strip(),
        "instruction": instruction,
        "num_prompts": int(num_prompts),
        "max_words": int(max_words),
        "base_url": url,
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- answers


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
    text = _THINK.sub("", answer or "").strip()
    if not text:
        raise VLMError(
            "the model returned an empty answer; try again with another seed, "
            "or check that the model accepts images"
        )
    if _REFUSAL.match(clean_prompt(text.splitlines()[0])):
        raise VLMError(
            f"the model refused to answer: {_excerpt(text)!r}. "
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
        raise VLMError(f"the model's answer holds no usable prompt: {_excerpt(text)!r}")
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


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
            f"the server's reply is not a chat completion: {_excerpt(str(completion))!r}"
        ) from None
    if refusal:
        raise VLMError(f"the model refused to answer: {_excerpt(str(refusal))!r}")
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


# --------------------------------------------------------------------------- cache


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


# --------------------------------------------------------------------------- client


def openai_problem() -> str | None:
    """``None`` when ``openai`` imports, else a one-line reason (it is imported here, lazily)."""
    try:
        import openai  # noqa: F401
    except Exception as exc:  # not installed, or installed but broken
        return f"{type(exc).__name__}: {exc}"
    return None


def import_openai() -> Any:
    """The ``openai`` module, or :class:`VLMError` saying how to install it."""
    problem = openai_problem()
    if problem is not None:
        raise VLMError(
            f"the openai package is not available ({problem}). Install it into ComfyUI's "
            f"Python environment with: pip install openai — then restart ComfyUI."
        )
    import openai

    return openai


@dataclass(frozen=True)
class VLMResult:
    prompts: list[str]
    answer: str | None  # the raw answer; None when served from the cache
    from_cache: bool
    cache_key: str


@dataclass(frozen=True)
class RetryPolicy:
    """Retries after the first attempt, and the exponential backoff between them (s)."""

    retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 20.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        wait = self.backoff_base * (2**attempt)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.backoff_max)


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class VLMClient:
    """Answers :class:`VLMRequest` s from the disk cache or an OpenAI-compatible server.

    ``cache_dir=None`` disables the cache. ``timeout`` is the network timeout of one
    attempt in seconds. ``sleep`` is injectable so tests need not wait.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cache = AnswerCache(cache_dir) if cache_dir is not None else None
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.sleep = sleep

    def cached(self, request: VLMRequest) -> list[str] | None:
        if self.cache is None:
            return None
        return self.cache.get(request.cache_key(), request.num_prompts)

    def ask(self, request: VLMRequest, api_key: ApiKey | Callable[[], ApiKey]) -> VLMResult:
        """The prompts for ``request``; ``api_key`` may be a callable, called only on a miss."""
        key = request.cache_key()
        hit = self.cached(request)
        if hit is not None:
            log.info("[Analogist] B' prompts from the cache (%s): %s", key[:12], hit)
            return VLMResult(hit, None, True, key)

        openai = import_openai()
        api = api_key() if callable(api_key) else api_key
        try:
            answer = self._send(openai, request, api)
            prompts = parse_prompts(answer, request.num_prompts, request.max_words)
        except VLMError as exc:
            raise VLMError(redact(str(exc), api.value)) from None
        except Exception as exc:  # anything unforeseen: still no key, no chained traceback
            raise VLMError(
                f"unexpected error asking {display_url(request.url)}: "
                f"{type(exc).__name__}: {redact(str(exc), api.value)}"
            ) from None
        if self.cache is not None:
            self.cache.put(key, prompts, answer, request.model)
        log.info("[Analogist] B' prompts from %s: %s", request.model, prompts)
        return VLMResult(prompts, answer, False, key)

    # -- network

    def _send(self, openai: Any, request: VLMRequest, api: ApiKey) -> str:
        url = request.url
        where = display_url(url)
        log.info(
            "[Analogist] asking %s at %s for %d prompt(s) (PNG %d KiB, key: %s)",
            request.model,
            where,
            request.num_prompts,
            len(request.image_png) // 1024,
            api.origin,
        )
        client = openai.OpenAI(api_key=api.value, base_url=url, timeout=self.timeout, max_retries=0)
        if not is_openai_url(url):
            # The client adds OPENAI_ORG_ID / OPENAI_PROJECT_ID from the environment as
            # headers; those identify the user's OpenAI account to whatever server this is.
            client.organization = None
            client.project = None
        attempts = self.retry.retries + 1
        try:
            for attempt in range(attempts):
                try:
                    return self._attempt(openai, client, request, api, where)
                except _Retryable as exc:
                    if attempt + 1 >= attempts:
                        raise VLMError(
                            f"{where} did not answer after {attempts} attempt(s): {exc.reason}. "
                            f"Try again later, raise timeout, or check the server."
                        ) from None
                    wait = self.retry.delay(attempt, exc.retry_after)
                    log.warning(
                        "[Analogist] %s (attempt %d of %d); retrying in %.2f s",
                        exc.reason,
                        attempt + 1,
                        attempts,
                        wait,
                    )
                    self.sleep(wait)
        finally:
            try:
                client.close()
            except Exception:
                pass
        raise AssertionError("unreachable")

    def _attempt(
        self, openai: Any, client: Any, request: VLMRequest, api: ApiKey, where: str
    ) -> str:
        try:
            # seed goes in extra_body: same JSON on the wire, and accepted by every openai>=1.0
            # (the seed keyword came later than 1.0, which requirements.txt allows).
            completion = client.chat.completions.create(
                model=request.model,
                messages=request.messages(),
                extra_body={"seed": request.seed},
            )
        except openai.APITimeoutError:
            raise _Retryable(f"no answer within the {self.timeout:g} s timeout") from None
        except openai.APIConnectionError as exc:
            raise _Retryable(f"could not connect ({_cause_name(exc)})") from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc, request, api, where) from None
        except openai.APIResponseValidationError as exc:
            raise VLMError(f"{where} sent a malformed reply: {_server_message(exc)}") from None
        except openai.OpenAIError as exc:
            raise VLMError(
                f"the request to {where} failed: {type(exc).__name__}: "
                f"{redact(str(exc), api.value)}"
            ) from None
        except (ValueError, TypeError) as exc:  # e.g. a body that is not JSON
            raise VLMError(f"{where} sent a malformed reply ({type(exc).__name__})") from None
        return answer_text(completion)

    def _status_error(self, exc: Any, request: VLMRequest, api: ApiKey, where: str) -> Exception:
        status = getattr(exc, "status_code", None) or 0
        said = _server_message(exc)
        if status in (408, 409, 429) or status >= 500:
            return _Retryable(f"HTTP {status} from {where}: {said}", _retry_after(exc))
        if status in (401, 403):
            if api.placeholder:
                return VLMError(
                    f"{where} refused the request (HTTP {status}): it needs an API key, and "
                    f"{api.origin}. Put that server's key in an environment variable or key "
                    f"file and name the variable in api_key_env (never the key itself). "
                    f"Server said: {said}"
                )
            return VLMError(
                f"the API key was rejected by {where} (HTTP {status}); it was read from "
                f"{api.origin}. Check that key (it is not shown), its permissions for model "
                f"{request.model!r}, and billing. Server said: {said}"
            )
        if status == 404:
            return VLMError(
                f"{where} answered 404 for model {request.model!r}: check the model name and "
                f"that base_url ends with the API root (usually /v1). Server said: {said}"
            )
        return VLMError(
            f"{where} rejected the request (HTTP {status}): {said}. Check that model "
            f"{request.model!r} accepts images."
        )


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        text = body.get("message") or body.get("error") or json.dumps(body)[:300]
    elif body is not None:
        text = str(body)
    else:
        text = getattr(exc, "message", None) or str(exc)
    return _excerpt(redact(str(text)), 300)


def _retry_after(exc: Any) -> float | None:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after"):
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None
    return None


def _cause_name(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause is not None else type(exc).__name__
