"""Where a request goes: the workflow's ``base_url``, checked, and the server it names.

A ``base_url`` is saved in every workflow and in every image's metadata, so it may name a
server and an API root but never carry a secret: user info (``user:password@``), a query
string (``?api_key=...``) or a fragment are refused, and the refusal never repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from .errors import VLMError

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_HOST = "api.openai.com"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Server:
    """A server as keys are bound to it: scheme, host and port (the URL's origin)."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.port == _DEFAULT_PORTS.get(self.scheme):
            return f"{self.scheme}://{host}"
        return f"{self.scheme}://{host}:{self.port}"


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to print."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", "")) or "(empty)"
    except ValueError:
        return "(unparseable URL)"


def carries_credentials(url: str) -> bool:
    """True when ``url`` holds user info, a query string or a fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True
    return (
        "@" in parts.netloc or bool(parts.query) or bool(parts.fragment) or "?" in url or "#" in url
    )


_NAMED = {"\t": "a tab", "\n": "a line break", "\r": "a line break (CR)", " ": "a space"}


def url_text_problem(url: str) -> str | None:
    """What makes ``url`` more than printable ASCII, or ``None``.

    Python's URL parser silently drops tabs and line breaks and reads full-width digits
    as a port, so such a URL passes a parse and fails later, in the HTTP library, as an
    unexplained "InvalidURL". The character is named by position and code, never shown.
    """
    for position, char in enumerate(url, start=1):
        if char.isascii() and char.isprintable() and char != " ":
            continue
        name = _NAMED.get(char) or f"the character U+{ord(char):04X}"
        if not char.isascii() and char.isprintable():
            name += " (not ASCII: a full-width digit or letter, or a look-alike?)"
        return f"{name} at position {position}"
    return None


def server_of(url: str) -> Server:
    """The :class:`Server` an http(s) URL names (host lower-cased, default port filled in)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an http(s) URL")
    port = parts.port  # ValueError for a port out of range
    return Server(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme])


def normalize_base_url(base_url: str, binding_hint: str = "") -> str:
    """The URL requests go to: empty means OpenAI's API; trailing slashes dropped.

    The ``OPENAI_BASE_URL`` environment variable is deliberately ignored: the graph
    alone says where the image is sent. ``binding_hint`` (where keys are bound) is added
    to the refusal of a URL that carries credentials.
    """
    url = (base_url or "").strip().rstrip("/")
    if not url:
        return OPENAI_BASE_URL
    problem = url_text_problem(url)
    if problem:
        raise VLMError(
            f"base_url has {problem}: a URL is printable ASCII without spaces. Retype it "
            f"(text pasted from a document can carry tabs, line breaks or full-width "
            f"characters); an international domain name goes in its xn-- form."
        )
    if carries_credentials(url):
        shown = display_url(url)
        raise VLMError(
            f"base_url must not carry credentials (a user:password@ part, a query string such "
            f"as ?api_key=..., or a #fragment); it is not shown because it may hold a secret. "
            f"A URL is saved in every workflow and image, so keys never go there: set "
            f"base_url to the server's API root alone (e.g. {shown}) and bind the key to "
            f"that server on your side instead{': ' + binding_hint if binding_hint else ''}."
        )
    try:
        server_of(url)
    except ValueError:
        raise VLMError(
            f"base_url must be an http(s) URL such as http://127.0.0.1:11434/v1 (Ollama) or "
            f"empty for OpenAI; got {display_url(url)!r}"
        ) from None
    return url


def is_openai_url(url: str) -> bool:
    """True only for ``https://api.openai.com`` on its default port."""
    try:
        return server_of(url) == Server("https", OPENAI_HOST, 443)
    except ValueError:
        return False
