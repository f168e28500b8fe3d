"""How long and how much a server may answer: a deadline per attempt, a size cap, Cancel.

The HTTP library's own ``timeout`` bounds each *read*: a server sending one byte every
half second never trips it, and holds the node (and ComfyUI's whole queue) as long as it
likes. Here:

* :class:`Guard` is the state one request shares between the thread that waits for it
  (ComfyUI's, which watches Cancel) and the thread that talks to the server;
* :class:`GuardedTransport` wraps the HTTP library's transport: every attempt must have its
  whole answer within ``timeout`` seconds of being sent, and the body is read here, chunk
  by chunk, at most :data:`MAX_ANSWER_BYTES` of it, *then* decompressed here with the same
  cap, so a gzip bomb never grows past it in memory. The HTTP library gets the body
  already decoded;
* :func:`run_guarded` runs the request in a worker thread and waits for it in slices,
  calling ``interrupted`` (ComfyUI's Cancel check) between them; it returns at the
  latest when the overall budget (all attempts and the pauses between them) is spent.

The HTTP module is the one the ``openai`` package uses (``httpx``, or ``httpx2`` in
openai 3), passed in; nothing here imports it.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import VLMError

T = TypeVar("T")

# A chat completion with 10 prompts of 75 words is a few KiB; reasoning models that think
# aloud write tens of KiB. Anything near this is not an answer but a server's abuse.
MAX_ANSWER_BYTES = 1 << 20
# The longest pause the openai client takes between attempts on its own (its backoff
# tops out at 8 s); a longer Retry-After eats into the overall budget.
MAX_PAUSE = 8.0
# Past the budget the waiting thread stops waiting; a second later than the attempts'
# own deadlines, so those (with their clearer message) normally come first.
GRACE = 1.0
# How often the waiting thread looks at Cancel and the clock.
POLL_SECONDS = 0.05
ACCEPTED_ENCODINGS = "gzip, deflate"
_DROPPED_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n / 1024:g} KiB"


class Interrupted(BaseException):
    """Carries what ``interrupted`` raised past ``except Exception`` handlers, unchanged."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(original)
        self.original = original


class Guard:
    """What one request's two threads share: the limits, Cancel, and the first failure."""

    def __init__(self, where: str, timeout: float, max_bytes: int = MAX_ANSWER_BYTES) -> None:
        self.where = where
        self.timeout = float(timeout)
        self.max_bytes = int(max_bytes)
        self.stopped = threading.Event()
        self.failure: str | None = None

    def fail(self, message: str) -> None:
        """Record why the request must end (the first reason wins) and stop it."""
        if self.failure is None:
            self.failure = message
        self.stopped.set()

    def too_large(self, what: str) -> None:
        self.fail(
            f"{self.where} sent an answer larger than {_size(self.max_bytes)}{what}; a prompt "
            f"is a few words, so it was not read further. Check base_url: that server does "
            f"not behave like a chat-completions API."
        )


class GuardedTransport:
    """An HTTP transport: the whole answer within ``guard.timeout``, at most
    ``guard.max_bytes`` of it before and after decompression. Wraps ``inner``."""

    def __init__(self, httpx: Any, inner: Any, guard: Guard) -> None:
        self.httpx = httpx
        self.inner = inner
        self.guard = guard

    def handle_request(self, request: Any) -> Any:
        guard, httpx = self.guard, self.httpx
        if guard.stopped.is_set():  # the waiting thread gave up: no further attempt
            raise httpx.ReadError("the request was stopped", request=request)
        deadline = time.monotonic() + guard.timeout
        # A compressed answer is only accepted in an encoding decoded (and capped) here.
        request.headers["Accept-Encoding"] = ACCEPTED_ENCODINGS
        request.extensions = {**request.extensions, "timeout": _timeouts(guard.timeout)}
        response = self.inner.handle_request(request)
        try:
            raw = self._read(response, request, deadline)
        finally:
            response.close()
        body = self._decode(raw, response.headers.get("content-encoding", ""), request)
        headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _DROPPED_HEADERS
        ]
        extensions = {
            k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")
        }
        return httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=extensions,
        )

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> GuardedTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, response: Any, request: Any, deadline: float) -> bytes:
        guard, httpx = self.guard, self.httpx
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > guard.max_bytes:
            guard.too_large(f" (it announced {_size(int(declared))})")
            raise httpx.ReadError("answer too large", request=request)
        parts: list[bytes] = []
        total = 0
        for chunk in response.stream:
            total += len(chunk)
            if total > guard.max_bytes:
                guard.too_large("")
                raise httpx.ReadError("answer too large", request=request)
            parts.append(chunk)
            if guard.stopped.is_set():
                raise httpx.ReadError("the request was stopped", request=request)
            if time.monotonic() > deadline:
                # The library's own timeout is per read; this one is per answer.
                raise httpx.ReadTimeout(
                    f"no complete answer within {guard.timeout:g} s", request=request
                )
        return b"".join(parts)

    def _decode(self, raw: bytes, encoding: str, request: Any) -> bytes:
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip()]
        body = raw
        for coding in reversed(codings):  # the last applied is undone first
            if coding == "identity":
                continue
            if coding in ("gzip", "x-gzip"):
                body = self._inflate(body, 16 + zlib.MAX_WBITS, request)
            elif coding == "deflate":
                try:
                    body = self._inflate(body, zlib.MAX_WBITS, request)
                except zlib.error:  # some servers send raw deflate without the zlib header
                    body = self._inflate(body, -zlib.MAX_WBITS, request)
            else:
                self.guard.fail(
                    f"{self.guard.where} answered in the encoding {coding[:20]!r}, which was "
                    f"not asked for (only {ACCEPTED_ENCODINGS}); check base_url"
                )
                raise self.httpx.DecodingError("unexpected encoding", request=request)
        return body

    def _inflate(self, data: bytes, wbits: int, request: Any) -> bytes:
        limit = self.guard.max_bytes
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, limit + 1)
            if len(out) <= limit and not inflater.unconsumed_tail:
                out += inflater.flush()
        except zlib.error:
            if wbits == zlib.MAX_WBITS:
                raise
            self.guard.fail(f"{self.guard.where} sent a compressed answer that does not decode")
            raise self.httpx.DecodingError("bad compressed data", request=request) from None
        if len(out) > limit or inflater.unconsumed_tail:
            self.guard.too_large(" once decompressed")
            raise self.httpx.DecodingError("answer too large", request=request)
        return out


def _timeouts(seconds: float) -> dict[str, float]:
    return {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}


def overall_budget(timeout: float, max_retries: int) -> float:
    """The longest a request may take in all: every attempt its ``timeout``, every pause
    between attempts at most :data:`MAX_PAUSE`, plus :data:`GRACE`."""
    return (1 + max_retries) * timeout + max_retries * MAX_PAUSE + GRACE


def run_guarded(
    work: Callable[[], T],
    guard: Guard,
    budget: float,
    interrupted: Callable[[], None] | None = None,
) -> T:
    """``work()`` in a worker thread; returns its result or raises its exception.

    Returns early, with :class:`VLMError`, when the guard records a failure or ``budget``
    seconds pass; ``interrupted`` is called every :data:`POLL_SECONDS` and whatever it
    raises (ComfyUI's interrupt) is raised at once, wrapped in :class:`Interrupted` so no
    ``except Exception`` on the way rewrites it. In those cases the worker is told
    to stop and left to end on its own, within one read.
    """
    done = threading.Event()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=run, name="analogist-vlm-request", daemon=True)
    limit = time.monotonic() + budget
    worker.start()
    try:
        while not done.wait(POLL_SECONDS):
            if guard.failure is not None:
                break
            if interrupted is not None:
                try:
                    interrupted()
                except BaseException as exc:
                    raise Interrupted(exc) from None
            if time.monotonic() > limit:
                guard.fail(
                    f"{guard.where} gave no complete answer within {budget:g} s (every attempt "
                    f"may take {guard.timeout:g} s, the timeout, plus pauses between "
                    f"attempts). Try again later, raise timeout, or check the server."
                )
                break
    except BaseException:
        guard.stopped.set()
        raise
    if guard.failure is not None:
        guard.stopped.set()
        raise VLMError(guard.failure)
    if "error" in box:
        raise box.pop("error")
    return box["result"]
