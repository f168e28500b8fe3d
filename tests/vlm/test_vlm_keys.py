"""Which key goes to which server: the user's bindings, never the workflow's choice.

Hostile settings are tried through the real node against real chat-completions servers
on 127.0.0.1, with real secrets in the environment and in key files: none of them may
reach a server the user did not bind it to, in any header or in the body.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pytest
import support.chat_server as helper
import torch
from comfyui_analogist import analogist_vlm as vlm
from comfyui_analogist.nodes import vlm as gpt4v
from support.fake_secrets import make_secret


def token(prefix: str) -> str:
    return make_secret(prefix)


@pytest.fixture
def chat():
    server = helper.ChatServer().start()
    yield server
    server.close()


@pytest.fixture
def other():
    server = helper.ChatServer().start()
    yield server
    server.close()


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt4v, "user_directory", lambda: tmp_path / "user")
    monkeypatch.setattr(gpt4v, "MAX_RETRIES", 0)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    monkeypatch.delenv(vlm.BINDINGS_ENV, raising=False)
    (tmp_path / "user" / "__analogist").mkdir(parents=True)
    return tmp_path / "user"


@pytest.fixture
def secrets_env(monkeypatch, user_dir):
    """What a user's environment holds: cloud and OpenAI secrets, one key bound elsewhere."""
    values = {
        "AWS_SECRET_ACCESS_KEY": token("aws"),
        "OPENAI_API_KEY": token("sk-"),
        "GITHUB_TOKEN": token("ghp_"),
        "OTHER_SERVER_KEY": token("other"),
        "OPENAI_ADMIN_KEY": token("sk-admin-"),
        "OPENAI_ORG_ID": token("org-"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", f"X-Api-Key: {values['GITHUB_TOKEN']}")
    (user_dir / "__analogist" / "openai_api_key.txt").write_text(values["OPENAI_API_KEY"])
    return values


def origin(server) -> str:
    return server.base_url[: -len("/v1")]


def bind(user_dir, *lines: str) -> None:
    (user_dir / "__analogist" / vlm.BINDINGS_FILE).write_text("\n".join(lines) + "\n")


def run_node(base_url: str, api_key_env: str = "OPENAI_API_KEY", seed: int = 0):
    pixels = np.random.default_rng(seed).integers(0, 256, (1, 24, 32, 3), dtype=np.uint8)
    return gpt4v.AnalogistGPT4VPrompt().ask(
        torch.from_numpy(pixels.astype(np.float32) / 255.0),
        "gpt-4o",
        vlm.DEFAULT_INSTRUCTION,
        1,
        5,
        "",
        base_url,
        seed,
        api_key_env,
        5.0,
    )


def everything_received(*servers) -> str:
    return json.dumps([[r.path, r.headers, r.body] for s in servers for r in s.requests])


# --------------------------------------------------------------------------- hostile workflows


HOSTILE = {
    "a cloud secret named for a foreign server": ("AWS_SECRET_ACCESS_KEY", "{chat}/v1"),
    "OpenAI's key named for a foreign server": ("OPENAI_API_KEY", "{chat}/v1"),
    "a token named for a foreign server": ("GITHUB_TOKEN", "{chat}/v1"),
    "a key bound to another server": ("OTHER_SERVER_KEY", "{chat}/v1"),
    "the bound server's host on another port": (
        "OTHER_SERVER_KEY",
        "http://127.0.0.1:{chat_port}/v1",
    ),
    "http to a server bound on https": ("", "http://127.0.0.1:{other_port}/v1"),
    "OpenAI's host as user info": (
        "OPENAI_API_KEY",
        "https://api.openai.com@127.0.0.1:{chat_port}/v1",
    ),
    "a key in the query string": ("OPENAI_API_KEY", "{chat}/v1?api_key=x"),
    "a fragment naming OpenAI": ("OPENAI_API_KEY", "{chat}/v1#api.openai.com"),
    "OpenAI's host spelled in the path": ("OPENAI_API_KEY", "{chat}/api.openai.com/v1"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_workflow_sends_no_secret(case, chat, other, user_dir, secrets_env, caplog):
    # The user bound one key, to the other server, on https: nothing is bound to `chat`.
    bind(user_dir, f"https://127.0.0.1:{other.port} = env:OTHER_SERVER_KEY")
    api_key_env, url = HOSTILE[case]
    url = url.format(chat=origin(chat), chat_port=chat.port, other_port=other.port)
    caplog.set_level(logging.DEBUG)
    try:
        run_node(url, api_key_env)
    except vlm.VLMError as exc:  # refused (credentials in the URL) or a 404 or a TLS failure
        message = str(exc)
    else:
        message = ""
    received = everything_received(chat, other)
    for name, value in secrets_env.items():
        assert value not in received, f"{name} reached a server"
        assert value not in message and value not in caplog.text, name
    assert all("authorization" not in r.headers for r in chat.requests + other.requests)
    if "?" in url or "#" in url or "@" in url:
        assert "must not carry credentials" in message and chat.count == 0
    else:  # the request did go out: there was something to leak
        assert chat.count + other.count == 1


def test_a_redirect_to_another_host_carries_no_key(chat, other, user_dir, secrets_env):
    bind(user_dir, f"{origin(chat)} = env:OTHER_SERVER_KEY")
    chat.script(
        helper.Reply(307, body="", headers={"Location": f"{other.base_url}/chat/completions"})
    )
    with pytest.raises(vlm.VLMError, match=r"redirect \(HTTP 307\).*not followed"):
        run_node(chat.base_url, "")
    assert chat.requests[0].headers["authorization"] == f"Bearer {secrets_env['OTHER_SERVER_KEY']}"
    assert other.count == 0


# --------------------------------------------------------------------------- bound servers


def test_a_bound_local_server_gets_its_key_and_only_its_key(chat, user_dir, secrets_env):
    bind(user_dir, "# my vLLM", f"HTTP://127.0.0.1:{chat.port} = env:OTHER_SERVER_KEY")
    run_node(chat.base_url, "AWS_SECRET_ACCESS_KEY")  # what the workflow names is ignored
    headers = chat.requests[0].headers
    assert headers["authorization"] == f"Bearer {secrets_env['OTHER_SERVER_KEY']}"
    received = everything_received(chat)
    for name in ("AWS_SECRET_ACCESS_KEY", "OPENAI_API_KEY", "GITHUB_TOKEN", "OPENAI_ORG_ID"):
        assert secrets_env[name] not in received, name


def test_an_unbound_server_gets_no_key(chat, user_dir, secrets_env):
    run_node(chat.base_url)
    assert "authorization" not in chat.requests[0].headers


def test_bindings_from_the_environment_variable_and_a_key_file(chat, other, user_dir, monkeypatch):
    key_file = user_dir.parent / "elsewhere" / "chat.key"
    key_file.parent.mkdir()
    key_file.write_text(token("file") + "\n")
    key_file.chmod(0o600)
    env_key = token("env")
    monkeypatch.setenv("CHAT_KEY", env_key)
    monkeypatch.setenv(
        vlm.BINDINGS_ENV, f"{origin(chat)} = file:{key_file} ; {origin(other)}=env:CHAT_KEY"
    )
    run_node(chat.base_url)
    run_node(other.base_url)
    assert chat.requests[0].headers["authorization"] == f"Bearer {key_file.read_text().strip()}"
    assert other.requests[0].headers["authorization"] == f"Bearer {env_key}"


def test_openai_is_bound_by_default_to_https_api_openai_com_only(tmp_path):
    key = token("sk-")
    environ = {"OPENAI_API_KEY": key}
    assert vlm.find_api_key("https://api.openai.com/v1", tmp_path, environ).value == key
    assert vlm.find_api_key("https://API.openai.com:443/v1", tmp_path, environ).value == key
    for url in (
        "http://api.openai.com/v1",
        "https://api.openai.com:8443/v1",
        "https://api.openai.com.evil.test/v1",
    ):
        assert vlm.find_api_key(url, tmp_path, environ).missing, url
    (tmp_path / "openai_api_key.txt").write_text(key)
    assert vlm.find_api_key("https://api.openai.com/v1", tmp_path, {}).value == key


def test_a_bound_variable_that_is_unset_is_an_error_naming_the_binding(chat, user_dir, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    bind(user_dir, f"{origin(chat)} = env:NOT_SET_ANYWHERE")
    with pytest.raises(vlm.VLMError) as info:
        run_node(chat.base_url)
    assert "vlm_keys.conf line 1" in str(info.value) and "NOT_SET_ANYWHERE" in str(info.value)
    assert chat.count == 0


# --------------------------------------------------------------------------- key files


def test_a_key_file_readable_by_others_is_warned_about(chat, user_dir, caplog):
    key_file = user_dir / "__analogist" / "chat.key"
    key = token("k")
    key_file.write_text(key)
    bind(user_dir, f"{origin(chat)} = file:chat.key")
    key_file.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
        run_node(chat.base_url, seed=1)
    assert f"the key file {key_file} is readable by other users; consider: chmod 600" in caplog.text
    caplog.clear()
    key_file.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
        run_node(chat.base_url, seed=2)
    assert "readable by other users" not in caplog.text
    assert key not in caplog.text
    assert chat.requests[1].headers["authorization"] == f"Bearer {key}"


def test_a_missing_bound_key_file_is_an_error_naming_file_and_binding(chat, user_dir):
    bind(user_dir, f"{origin(chat)} = file:nowhere.key")
    with pytest.raises(vlm.VLMError) as info:
        run_node(chat.base_url)
    assert str(user_dir / "__analogist" / "nowhere.key") in str(info.value)
    assert "vlm_keys.conf line 1" in str(info.value) and chat.count == 0


# --------------------------------------------------------------------------- bad binding files


@pytest.mark.parametrize(
    ("lines", "line", "problem"),
    [
        (["http://127.0.0.1:8000 env:KEY"], 1, "no `=`"),
        (
            ["# ok", "", "http://127.0.0.1:8000 = KEYVALUESECRET"],
            3,
            "must start with env: or file:",
        ),
        (["http://127.0.0.1:8000 = env:not a name"], 1, "NAME of an environment variable"),
        (["127.0.0.1:8000 = env:KEY"], 1, "scheme://host[:port]"),
        (["ftp://127.0.0.1 = env:KEY"], 1, "scheme://host[:port]"),
        (["http://127.0.0.1:8000/v1 = env:KEY"], 1, "without a path: write http://127.0.0.1:8000"),
        (["http://me:KEYVALUESECRET@127.0.0.1 = env:KEY"], 1, "must not carry a user"),
        (["http://127.0.0.1:99999 = env:KEY"], 1, "scheme://host[:port]"),
        (["http://a.test = env:A", "HTTP://A.test:80 = env:B"], 2, "already bound in line 1"),
        (["http://a.test = file:"], 1, "file: needs a path"),
    ],
)
def test_a_bad_binding_file_is_a_clear_error_naming_file_and_line(user_dir, lines, line, problem):
    bind(user_dir, *lines)
    path = user_dir / "__analogist" / vlm.BINDINGS_FILE
    with pytest.raises(vlm.VLMError) as info:
        vlm.find_api_key("http://127.0.0.1:8000/v1", path.parent, {})
    message = str(info.value)
    assert f"bad key binding in {path} line {line}:" in message and problem in message
    assert "KEYVALUESECRET" not in message  # a line may hold a pasted key: never quoted


def test_a_bad_environment_binding_names_the_variable_and_entry():
    with pytest.raises(vlm.VLMError, match=rf"{vlm.BINDINGS_ENV} entry 2: .*absolute path"):
        vlm.find_api_key(
            "http://127.0.0.1:8000/v1",
            None,
            {vlm.BINDINGS_ENV: "http://a.test=env:A;http://b.test=file:b.key"},
        )


def test_a_server_bound_in_both_file_and_variable_is_an_error_naming_both(user_dir):
    bind(user_dir, "http://a.test = env:A")
    with pytest.raises(vlm.VLMError) as info:
        vlm.find_api_key(
            "http://b.test/v1", user_dir / "__analogist", {vlm.BINDINGS_ENV: "http://a.test=env:B"}
        )
    assert "vlm_keys.conf line 1" in str(info.value) and f"{vlm.BINDINGS_ENV} entry 1" in str(
        info.value
    )
