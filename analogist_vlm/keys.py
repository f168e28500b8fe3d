"""Which key goes to which server: bindings the user makes on their own side.

A workflow is untrusted input (people share them), so nothing in it may choose a secret.
The user binds a key to a server, outside any workflow:

* the file ``<ComfyUI user dir>/__analogist/vlm_keys.conf``, one binding a line::

      # server (scheme://host[:port])   = where its key is
      http://127.0.0.1:8000             = env:VLLM_API_KEY
      https://llm.example.com           = file:llm_example.key

  ``env:NAME`` reads the environment variable NAME; ``file:PATH`` reads the first line
  of a file (a relative PATH is relative to the bindings file's folder);
* and/or the environment variable ``ANALOGIST_VLM_KEYS`` holding the same lines,
  separated by newlines or ``;``.

OpenAI's key is bound by default: ``https://api.openai.com`` gets ``OPENAI_API_KEY``, or
the first line of ``<user dir>/__analogist/openai_api_key.txt``. A server with no binding
gets no key at all (local servers need none). Scheme, host and port must all match:
``http://`` does not get the ``https://`` key, nor another port the same host's.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .errors import VLMError
from .urls import OPENAI_HOST, Server, carries_credentials, server_of, url_text_problem

log = logging.getLogger("analogist.vlm")

BINDINGS_FILE = "vlm_keys.conf"
BINDINGS_ENV = "ANALOGIST_VLM_KEYS"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
OPENAI_SERVER = Server("https", OPENAI_HOST, 443)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


@dataclass(frozen=True)
class ApiKey:
    """The key for one request and where it came from. ``repr``/``str`` never show it.

    ``value`` is ``None`` when the server has no binding: no key is sent.
    """

    value: str | None = field(repr=False)
    origin: str
    env: str | None = None  # the environment variable it was read from, if any

    @property
    def missing(self) -> bool:
        return self.value is None

    def __str__(self) -> str:
        return f"API key from {self.origin}" if self.value is not None else self.origin


@dataclass(frozen=True)
class Binding:
    """One server's key source: an environment variable and/or a key file."""

    server: Server
    env: str | None
    file: Path | None
    where: str  # e.g. "/…/vlm_keys.conf line 3": for messages

    def source(self) -> str:
        parts = []
        if self.env:
            parts.append(f"environment variable {self.env}")
        if self.file:
            parts.append(f"file {self.file}")
        return " or ".join(parts)


def bindings_path(key_dir: Path | None) -> Path | None:
    return key_dir / BINDINGS_FILE if key_dir is not None else None


def where_to_bind(key_dir: Path | None) -> str:
    """Where a user adds a binding, for messages."""
    path = bindings_path(key_dir)
    file_part = (
        f"the file {path}" if path else "the bindings file (ComfyUI's user directory was not found)"
    )
    return f"{file_part} or the environment variable {BINDINGS_ENV}"


def parse_bindings(
    text: str, source: str, base_dir: Path | None, *, entries: bool = False
) -> list[Binding]:
    """Bindings from ``text``. Errors name ``source`` and the line (or entry); they never
    quote the line, which may hold a pasted key."""
    unit = "entry" if entries else "line"
    lines = re.split(r"[;\n]", text) if entries else text.splitlines()
    found: list[Binding] = []
    seen: dict[Server, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} {unit} {number}"

        def bad(problem: str, where: str = where) -> VLMError:
            return VLMError(
                f"bad key binding in {where}: {problem}. Each binding reads "
                f"`SERVER = env:VARIABLE` or `SERVER = file:PATH`, e.g. "
                f"`http://127.0.0.1:8000 = env:VLLM_API_KEY` (the line is not shown: it may hold a key)."
            )

        if "=" not in line:
            raise bad("no `=` between the server and its key source")
        left, right = (part.strip() for part in line.split("=", 1))
        server = _parse_server(left, bad)
        kind, _, value = right.partition(":")
        kind, value = kind.strip().lower(), value.strip()
        if kind == "env":
            if not _ENV_NAME.match(value):
                raise bad(
                    "after env: comes the NAME of an environment variable (letters, digits, _)"
                )
            binding = Binding(server, value, None, where)
        elif kind == "file":
            if not value:
                raise bad("file: needs a path")
            path = Path(value).expanduser()
            if not path.is_absolute():
                if base_dir is None:
                    raise bad("a key file named here needs an absolute path")
                path = base_dir / path
            binding = Binding(server, None, path, where)
        else:
            raise bad("the key source must start with env: or file:")
        if server in seen:
            raise bad(f"{server} is already bound in {unit} {seen[server]}; keep one")
        seen[server] = number
        found.append(binding)
    return found


def _parse_server(text: str, bad) -> Server:
    problem = url_text_problem(text)
    if problem:
        raise bad(f"the server has {problem}; write it as plain ASCII, e.g. http://127.0.0.1:8000")
    if carries_credentials(text):
        raise bad("the server must not carry a user, password, query or fragment")
    try:
        server = server_of(text)
    except ValueError:
        raise bad("the server must be scheme://host[:port] with scheme http or https") from None
    if urlsplit(text).path.strip("/"):
        raise bad(f"the server is scheme://host[:port] without a path: write {server}")
    return server


def load_bindings(
    key_dir: Path | None, environ: Mapping[str, str] | None = None
) -> dict[Server, Binding]:
    """The default OpenAI binding, the bindings file's and :data:`BINDINGS_ENV`'s.

    A server bound twice (in the file and the variable) is an error naming both places.
    """
    environ = os.environ if environ is None else environ
    default = Binding(
        OPENAI_SERVER,
        DEFAULT_KEY_ENV,
        key_dir / "openai_api_key.txt" if key_dir is not None else None,
        "the default binding of OpenAI's key",
    )
    user: dict[Server, Binding] = {}
    path = bindings_path(key_dir)
    lists = []
    if path is not None and path.exists() and not path.is_file():
        raise VLMError(
            f"the key bindings file {path} is a folder (or another non-file), so no binding "
            f"in it can be read. Remove it, or make it a text file with lines like "
            f"`http://127.0.0.1:8000 = env:VLLM_API_KEY`."
        )
    if path is not None and path.is_file():
        try:
            # utf-8-sig: Notepad starts a UTF-8 file with a byte-order mark.
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise VLMError(
                f"could not read the key bindings file {path}: {type(exc).__name__}"
            ) from None
        warn_if_others_can_write(path, "key bindings file")
        lists.append(parse_bindings(text, str(path), path.parent))
    if environ.get(BINDINGS_ENV, "").strip():
        lists.append(
            parse_bindings(
                environ[BINDINGS_ENV], f"environment variable {BINDINGS_ENV}", None, entries=True
            )
        )
    for bindings in lists:
        for binding in bindings:
            if binding.server in user:
                raise VLMError(
                    f"{binding.server} is bound twice, in {user[binding.server].where} and in "
                    f"{binding.where}; keep one"
                )
            user[binding.server] = binding
    return {OPENAI_SERVER: default, **user}


# Prefixes of keys people paste (OpenAI, Groq, Hugging Face, GitHub, Slack, an AWS key id).
_KEY_PREFIXES = (
    "sk-",
    "sk_",
    "gsk_",
    "hf_",
    "ghp_",
    "gho_",
    "ghs_",
    "github_pat_",
    "xoxb-",
    "xoxp-",
    "AKIA",
)


def _looks_like_key(name: str) -> bool:
    """True for what is more likely a pasted secret than a variable name.

    Variable names are short words in capitals (OPENAI_API_KEY); keys are long, mixed-case
    or lower-case with digits, or start with a provider's prefix.
    """
    if name.startswith(_KEY_PREFIXES):  # case matters: HF_TOKEN is a name, hf_... a key
        return True
    if len(name) >= 32 and "_" not in name:
        return True
    has_digit = any(c.isdigit() for c in name)
    return len(name) >= 20 and has_digit and name != name.upper()


def check_env_name(env_name: str) -> str:
    """Accept the *name* of an environment variable; refuse anything that may be a key.

    A key pasted into a widget would be saved in every workflow and image, so the error
    never repeats the value.
    """
    name = (env_name or "").strip()
    if not name:
        return ""
    if not _ENV_NAME.match(name) or _looks_like_key(name):
        raise VLMError(
            "api_key_env holds what looks like an API key: clear that field (it is unused, "
            "and whatever it holds is saved in the workflow and in every image's metadata; "
            "the value is not shown because it may be a secret). A key never goes into a "
            "workflow: OpenAI's goes in the environment variable OPENAI_API_KEY or in "
            "ComfyUI/user/__analogist/openai_api_key.txt, another server's in "
            "ComfyUI/user/__analogist/vlm_keys.conf (a line like "
            "`http://127.0.0.1:8000 = env:MY_KEY`). api_key_env may only be empty or the "
            "NAME of an environment variable (like OPENAI_API_KEY)."
        )
    return name


def find_api_key(
    url: str,
    key_dir: Path | None,
    environ: Mapping[str, str] | None = None,
) -> ApiKey:
    """The key bound to ``url``'s server, or no key when it has no binding.

    ``url`` is already checked (see :func:`urls.normalize_base_url`). A binding whose
    variable is unset and whose file is missing is an error naming the binding; for
    OpenAI the error also says how to use a local server instead.
    """
    environ = os.environ if environ is None else environ
    server = server_of(url)
    binding = load_bindings(key_dir, environ).get(server)
    if binding is None:
        return ApiKey(
            None,
            f"no key was sent: {server} has no key binding; to give it one, "
            f"{unbound_hint(url, key_dir)}",
        )
    if binding.env:
        value = environ.get(binding.env, "").strip()
        if value:
            origin = f"environment variable {binding.env} (bound to {server} by {binding.where})"
            return ApiKey(
                _check_key(value, f"environment variable {binding.env}"), origin, binding.env
            )
    if binding.file is not None and binding.env is None and not binding.file.is_file():
        raise VLMError(
            f"{server} is bound by {binding.where} to the key file {binding.file}, which does "
            f"not exist. Create it (the key alone on its first line, chmod 600) or fix the binding."
        )
    if binding.file is not None and binding.file.is_file():
        value = read_key_file(binding.file)
        if value:
            origin = f"file {binding.file} (bound to {server} by {binding.where})"
            return ApiKey(_check_key(value, f"file {binding.file}"), origin)
    if server == OPENAI_SERVER and binding.where.startswith("the default"):
        where = (
            f"the file {binding.file}"
            if binding.file
            else "a key file (ComfyUI's user directory was not found)"
        )
        raise VLMError(
            f"no OpenAI API key found. To use OpenAI, set the environment variable "
            f"{DEFAULT_KEY_ENV} before starting ComfyUI, or save the key alone in {where}; "
            f"keys are never taken from the workflow. To use a local OpenAI-compatible server "
            f"instead (Ollama, LM Studio, vLLM), set base_url, e.g. http://127.0.0.1:11434/v1 "
            f"for Ollama, and a vision model it serves; local servers need no key."
        )
    raise VLMError(
        f"{server} is bound by {binding.where} to the {binding.source()}, which is "
        f"{'unset or empty' if binding.env else 'empty'}. Set it before starting ComfyUI, or "
        f"remove that binding to send no key."
    )


def read_key_file(path: Path) -> str:
    """The first non-blank line of a key file; warns when others may read the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Notepad) is not part of the key
    except OSError as exc:
        raise VLMError(
            f"could not read the key file {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    except UnicodeDecodeError:
        raise VLMError(f"the key file {path} is not UTF-8 text") from None
    if os.name == "posix":
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                log.warning(
                    "[Analogist] the key file %s is readable by other users; consider: chmod 600 %s",
                    path,
                    path,
                )
        except OSError:
            pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else ""


def warn_if_others_can_write(path: Path, what: str) -> None:
    """Warn when users other than the owner can change ``path`` or replace it (its folder).

    Whoever can write the bindings file can bind a key, OpenAI's included, to their own
    server and receive it with the next request.
    """
    if os.name != "posix":
        return
    for target, kind in ((path, "file"), (path.parent, "folder")):
        try:
            mode = target.stat().st_mode
        except OSError:
            continue
        replaceable = mode & (stat.S_IWGRP | stat.S_IWOTH)
        if kind == "folder" and mode & stat.S_ISVTX:
            replaceable = 0  # a sticky folder (like /tmp): others cannot replace the file
        if replaceable:
            log.warning(
                "[Analogist] the %s %s can be changed by other users (its %s is writable "
                "by group or others): anyone who can write it can bind your keys to their "
                "own server. Consider: chmod go-w %s",
                what,
                path,
                kind,
                target,
            )
            return


def _check_key(value: str, origin: str) -> str:
    # A key that cannot go in an HTTP header would make the HTTP library raise an error
    # quoting the header, key included; refuse it here, without showing it.
    if not value.isascii() or not value.isprintable() or " " in value:
        raise VLMError(
            f"the API key in {origin} contains spaces, line breaks or non-ASCII "
            f"characters; it is not shown. Check that the key was copied whole."
        )
    return value


def unbound_hint(url: str, key_dir: Path | None) -> str:
    """How to give ``url``'s server a key: the line to add and where.

    The variable is a placeholder on purpose: a name taken from the workflow would let a
    shared workflow suggest binding, say, a cloud secret to its author's server.
    """
    try:
        server = server_of(url)
    except ValueError:
        return f"bind the key in {where_to_bind(key_dir)}"
    return f"add the line `{server} = env:YOUR_KEY_VARIABLE` to {where_to_bind(key_dir)}"
