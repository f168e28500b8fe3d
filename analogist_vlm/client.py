"""Ask the model: the cache first, else one chat-completions call through ``openai``.

The ``openai`` package is imported only when a request is sent, so this package loads
without it. Retries and backoff are the openai client's own (timeouts, 408, 409, 429 and
5xx, with exponential backoff that honours ``Retry-After``); this module turns what is
left into a :class:`VLMError` that says what to do.

Secrets: the request leaves through an HTTP client that follows no redirect, and a hook
that sees every outgoing request sets its ``Authorization`` to the bound key or removes
it; for any server but api.openai.com it also drops every header the ``openai`` package
adds from the environment (``OPENAI_ORG_ID``, ``OPENAI_CUSTOM_HEADERS``, ...). Errors
are raised ``from None`` so an openai exception, whose text may quote the server's
reply, is not chained into ComfyUI's traceback log, and every message is redacted.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .answers import answer_text, parse_prompts
from .cache import AnswerCache
from .errors import VLMError, excerpt, redact
from .keys import ApiKey
from .request import VLMRequest
from .transport import (
    MAX_ANSWER_BYTES,
    Guard,
    GuardedTransport,
    Interrupted,
    overall_budget,
    run_guarded,
)
from .urls import display_url, is_openai_url, server_of

log = logging.getLogger("analogist.vlm")

MAX_RETRIES = 3
# What a request to a server other than OpenAI's may carry; the rest is dropped.
_PLAIN_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "connection",
        "content-length",
        "content-type",
        "host",
        "user-agent",
    }
)


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


class VLMClient:
    """Answers :class:`VLMRequest` s from the disk cache or an OpenAI-compatible server.

    ``cache_dir=None`` disables the cache. ``timeout`` bounds one attempt in seconds, from
    sending to the answer's last byte; ``max_retries`` the openai client's retries after
    the first; the whole request ends within :func:`transport.overall_budget`. An answer
    over ``max_answer_bytes`` (before or after decompression) is refused. ``interrupted``
    is called while waiting and may raise to stop at once (ComfyUI's Cancel).
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        *,
        timeout: float = 60.0,
        max_retries: int = MAX_RETRIES,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        interrupted: Callable[[], None] | None = None,
    ) -> None:
        self.cache = AnswerCache(cache_dir) if cache_dir is not None else None
        self.timeout = float(timeout)
        if not math.isfinite(self.timeout) or self.timeout <= 0:
            raise VLMError(f"timeout must be a number of seconds above 0, got {timeout!r}")
        self.max_retries = int(max_retries)
        self.max_answer_bytes = int(max_answer_bytes)
        self.interrupted = interrupted

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
        except Interrupted as stop:  # ComfyUI's Cancel: its own exception, untouched
            raise stop.original from None
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
        """One request (with the openai client's retries) in a worker thread, watched."""
        guard = Guard(display_url(request.url), self.timeout, self.max_answer_bytes)
        return run_guarded(
            lambda: self._call(openai, request, api, guard),
            guard,
            overall_budget(self.timeout, self.max_retries),
            self.interrupted,
        )

    def _call(self, openai: Any, request: VLMRequest, api: ApiKey, guard: Guard) -> str:
        url = request.url
        where = display_url(url)
        log.info(
            "[Analogist] asking %s at %s for %d prompt(s) (PNG %d KiB; %s)",
            request.model,
            where,
            request.num_prompts,
            len(request.image_png) // 1024,
            api,
        )
        attempts: list[str] = []
        hook = _request_guard(api, url, attempts)
        http_client = _http_client(openai, self.timeout, hook)
        client = openai.OpenAI(
            # The client refuses to start without a key; the guard removes this one.
            api_key=api.value or "no-key-bound",
            base_url=url,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=http_client,
        )
        if http_client is None:  # an openai too old for DefaultHttpxClient
            client._client.follow_redirects = False
            client._client.event_hooks = {"request": [hook], "response": []}
        _guard_transports(client._client, _httpx_of(openai), guard)
        try:
            completion = client.chat.completions.create(
                model=request.model,
                messages=request.messages(),
                # seed in extra_body: same JSON on the wire, accepted by every openai>=1.0
                extra_body={"seed": request.seed},
            )
        except openai.APITimeoutError:
            raise self._gave_up(
                where, attempts, f"no answer within the {self.timeout:g} s timeout"
            ) from None
        except openai.APIConnectionError as exc:
            raise self._gave_up(
                where, attempts, f"could not connect ({_cause_name(exc)})"
            ) from None
        except openai.APIStatusError as exc:
            raise self._status_error(exc, request, api, where, attempts) from None
        except openai.APIResponseValidationError as exc:
            raise VLMError(f"{where} sent a malformed reply: {_server_message(exc)}") from None
        except openai.OpenAIError as exc:
            raise VLMError(
                f"the request to {where} failed: {type(exc).__name__}: {redact(str(exc), api.value)}"
            ) from None
        except (ValueError, TypeError) as exc:  # e.g. a body that is not JSON
            raise VLMError(f"{where} sent a malformed reply ({type(exc).__name__})") from None
        finally:
            try:
                client.close()
            except Exception:
                pass
        return answer_text(completion)

    @staticmethod
    def _gave_up(where: str, attempts: list[str], reason: str) -> VLMError:
        return VLMError(
            f"{where} did not answer after {len(attempts)} attempt(s): {reason}. "
            f"Try again later, raise timeout, or check the server."
        )

    def _status_error(
        self, exc: Any, request: VLMRequest, api: ApiKey, where: str, attempts: list[str]
    ) -> VLMError:
        status = getattr(exc, "status_code", None) or 0
        said = _server_message(exc)
        if 300 <= status < 400:
            location = getattr(getattr(exc, "response", None), "headers", {}).get("location", "")
            target = display_url(location) if location else "(no location given)"
            return VLMError(
                f"{where} answered with a redirect (HTTP {status}) to {target}. Redirects are "
                f"not followed, so neither the key nor the image goes to a server the workflow "
                f"did not name. If that is the right server, set base_url to it (and bind its "
                f"key if it needs one)."
            )
        if status in (408, 409, 429) or status >= 500:
            return self._gave_up(where, attempts, f"HTTP {status} from {where}: {said}")
        if status in (401, 403):
            if api.missing:
                return VLMError(
                    f"{where} refused the request (HTTP {status}): it needs an API key, and "
                    f"{api.origin}. Keys are never taken from the workflow. Server said: {said}"
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


def _http_client(openai: Any, timeout: float, hook: Callable[[Any], None]) -> Any:
    """openai's own HTTP client (its pool and timeout defaults), following no redirect."""
    factory = getattr(openai, "DefaultHttpxClient", None)
    if factory is None:
        return None
    return factory(
        follow_redirects=False, timeout=timeout, event_hooks={"request": [hook], "response": []}
    )


def _httpx_of(openai: Any) -> Any:
    """The HTTP module the openai package is built on (httpx; httpx2 from openai 3 on)."""
    base = getattr(openai, "_base_client", None)
    for name in ("httpx2", "httpx"):
        module = getattr(base, name, None)
        if module is not None and hasattr(module, "Response"):
            return module
    return importlib.import_module("httpx")


def _guard_transports(http_client: Any, httpx: Any, guard: Guard) -> None:
    """Every transport ``http_client`` may use (its own, and those for proxies) wrapped in
    :class:`GuardedTransport`, so no answer escapes the deadline and the size cap."""
    transport = getattr(http_client, "_transport", None)
    mounts = getattr(http_client, "_mounts", None)
    if transport is None or not isinstance(mounts, dict):
        raise VLMError(
            f"this version of the HTTP library ({getattr(httpx, '__version__', '?')}) cannot "
            f"be guarded against endless or oversized answers; install a supported openai "
            f"(pip install 'openai>=1.0')"
        )
    http_client._transport = GuardedTransport(httpx, transport, guard)
    http_client._mounts = {
        pattern: GuardedTransport(httpx, inner, guard) if inner is not None else None
        for pattern, inner in mounts.items()
    }


def _request_guard(api: ApiKey, url: str, attempts: list[str]) -> Callable[[Any], None]:
    """An HTTP request hook: exactly the bound key, to exactly the named server."""
    server = server_of(url)
    official = is_openai_url(url)

    def guard(request: Any) -> None:
        attempts.append(request.method)
        same_server = server_of(str(request.url)) == server
        if not official or not same_server:
            for name in list(request.headers.keys()):
                low = name.lower()
                if low not in _PLAIN_HEADERS and not low.startswith("x-stainless-"):
                    del request.headers[name]
        if api.value is not None and same_server:
            request.headers["Authorization"] = f"Bearer {api.value}"
        else:
            request.headers.pop("Authorization", None)

    return guard


def _server_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        text = body.get("message") or body.get("error") or json.dumps(body)[:300]
    elif body is not None:
        text = str(body)
    else:
        text = getattr(exc, "message", None) or str(exc)
    return excerpt(redact(str(text)), 300)


def _cause_name(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    return type(cause).__name__ if cause is not None else type(exc).__name__
