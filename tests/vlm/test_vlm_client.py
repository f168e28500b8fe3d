"""The VLM client against a real chat-completions server on 127.0.0.1.

Requests, the disk cache, every fault (429, 5xx, hangs, 401/403, redirects, bad answers)
and the secret-handling promises: the key reaches the server's Authorization header and
nowhere else, not in any log record (all loggers at DEBUG, openai's and the HTTP stack's
included) nor in any error message or traceback. Which key goes where (the bindings) is
tested in test_vlm_keys.py.
"""

from __future__ import annotations

import base64
import io
import logging
import secrets
import socket
import time
import traceback

import numpy as np
import pytest
import support.chat_server as helper
from comfyui_analogist import analogist_vlm as vlm
from PIL import Image

Reply = helper.Reply
RETRIES = 2
KEY_ENV = "ANALOGIST_TEST_VLM_KEY"


@pytest.fixture
def server():
    srv = helper.ChatServer().start()
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def waits(monkeypatch):
    """The pauses the openai client takes between retries, recorded instead of slept."""
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.fixture
def png():
    rng = np.random.default_rng(5)
    return vlm.encode_png(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))


@pytest.fixture
def all_logs(caplog):
    caplog.set_level(logging.DEBUG)
    for name in ("openai", "httpx", "httpx2", "httpcore", "httpcore2", "analogist"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def make_request(png, server, **changes):
    fields = dict(
        image_png=png,
        model="gpt-4o",
        instruction=vlm.render_instruction(vlm.DEFAULT_INSTRUCTION, 1, 5),
        num_prompts=1,
        max_words=5,
        base_url=server.base_url,
        seed=7,
    )
    fields.update(changes)
    return vlm.VLMRequest(**fields)


def key_of(value):
    return vlm.ApiKey(value, f"environment variable {KEY_ENV}")


def client(tmp_path, **kwargs):
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("max_retries", RETRIES)
    return vlm.VLMClient(tmp_path / "cache", **kwargs)


def assert_secret_free(exc: BaseException, key: str) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert key not in text
    assert exc.__cause__ is None and exc.__suppress_context__


# --------------------------------------------------------------------------- requests


def test_request_carries_model_instruction_seed_key_and_the_exact_png(
    server, tmp_path, png, fake_key
):
    request = make_request(png, server)
    result = client(tmp_path).ask(request, key_of(fake_key))

    assert result.prompts == ["smiling woman exaggerated features"] and not result.from_cache
    sent = server.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {fake_key}"
    assert sent.body["model"] == "gpt-4o" and sent.body["seed"] == 7
    text, image = sent.body["messages"][0]["content"]
    assert text == {"type": "text", "text": request.instruction}
    assert "You should give me the most possible text prompt" in text["text"]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png


def test_png_data_url_decodes_to_the_same_pixels():
    pixels = np.random.default_rng(1).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    url = vlm.png_data_url(vlm.encode_png(pixels))
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "PNG" and decoded.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(decoded), pixels)


def test_three_prompts_come_back_as_a_list(server, tmp_path, png, fake_key):
    server.script(Reply(text="smiling woman big head, caricature of a woman, cartoon woman"))
    request = make_request(
        png,
        server,
        num_prompts=3,
        instruction=vlm.render_instruction(vlm.DEFAULT_INSTRUCTION, 3, 5),
    )
    result = client(tmp_path).ask(request, key_of(fake_key))
    assert result.prompts == ["smiling woman big head", "caricature of a woman", "cartoon woman"]
    assert (
        "prompt1, prompt2, prompt3" in server.requests[0].body["messages"][0]["content"][0]["text"]
    )


# --------------------------------------------------------------------------- cache


def test_identical_request_is_answered_from_cache_without_a_request(
    server, tmp_path, png, fake_key
):
    c = client(tmp_path)
    first = c.ask(make_request(png, server), key_of(fake_key))
    second = c.ask(make_request(png, server), key_of(fake_key))
    assert server.count == 1
    assert second.from_cache and second.prompts == first.prompts
    assert (tmp_path / "cache" / f"{first.cache_key}.json").is_file()


def test_cache_survives_a_new_client_instance_and_needs_no_key(server, tmp_path, png, fake_key):
    client(tmp_path).ask(make_request(png, server), key_of(fake_key))

    def no_key_needed():
        raise AssertionError("a cache hit must not look up the key")

    restarted = client(tmp_path)  # a new process would build a new client just like this
    assert restarted.ask(make_request(png, server), no_key_needed).from_cache
    assert server.count == 1


@pytest.mark.parametrize("change", ["image", "model", "seed", "instruction", "max_words"])
def test_a_changed_image_model_seed_or_instruction_asks_again(
    server, tmp_path, png, fake_key, change
):
    c = client(tmp_path)
    c.ask(make_request(png, server), key_of(fake_key))
    other_png = vlm.encode_png(np.zeros((24, 32, 3), dtype=np.uint8))
    changes = {
        "image": {"image_png": other_png},
        "model": {"model": "gpt-4.1"},
        "seed": {"seed": 8},
        "instruction": {"instruction": "Describe B'."},
        "max_words": {"max_words": 6},
    }[change]
    result = c.ask(make_request(png, server, **changes), key_of(fake_key))
    assert not result.from_cache and server.count == 2


def test_failed_answers_are_not_cached(server, tmp_path, png, fake_key):
    c = client(tmp_path)
    server.script(Reply(text=""))
    with pytest.raises(vlm.VLMError, match="empty answer"):
        c.ask(make_request(png, server), key_of(fake_key))
    assert c.ask(make_request(png, server), key_of(fake_key)).prompts
    assert server.count == 2


def test_a_corrupt_cache_entry_is_ignored_and_replaced(server, tmp_path, png, fake_key):
    request = make_request(png, server)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{request.cache_key()}.json").write_text("{not json")
    result = client(tmp_path).ask(request, key_of(fake_key))
    assert not result.from_cache and server.count == 1
    assert client(tmp_path).ask(request, key_of(fake_key)).from_cache


# --------------------------------------------------------------------------- faults


def test_429_then_success_is_retried_after_growing_pauses(server, tmp_path, png, fake_key, waits):
    server.script(
        Reply(429, helper.error_json("Rate limit reached", "requests", "rate_limit_exceeded")),
        Reply(503, helper.error_json("overloaded", "server_error", None)),
    )
    assert client(tmp_path).ask(make_request(png, server), key_of(fake_key)).prompts
    assert server.count == 3
    # The openai client's backoff: about 0.5 s, then about 1 s (up to 25 % jitter).
    assert len(waits) == 2 and 0.3 <= waits[0] <= 0.5 and 0.6 <= waits[1] <= 1.0


def test_retry_after_header_is_honoured(server, tmp_path, png, fake_key, waits):
    server.script(
        Reply(429, helper.error_json("slow down", "requests", None), headers={"retry-after": "3"}),
        Reply(
            429, helper.error_json("slow down", "requests", None), headers={"retry-after-ms": "40"}
        ),
    )
    client(tmp_path).ask(make_request(png, server), key_of(fake_key))
    assert waits == [3.0, 0.04]


def test_server_errors_every_time_fail_after_bounded_retries(server, tmp_path, png, fake_key):
    server.script(*[Reply(500, helper.error_json("boom", "server_error", None))] * 5)
    with pytest.raises(vlm.VLMError) as info:
        client(tmp_path).ask(make_request(png, server), key_of(fake_key))
    assert server.count == RETRIES + 1
    assert f"did not answer after {RETRIES + 1} attempt(s)" in str(info.value)
    assert "HTTP 500" in str(info.value) and "boom" in str(info.value)


def test_a_server_hanging_past_the_timeout_fails_in_bounded_time(server, tmp_path, png, fake_key):
    server.script(*[Reply(delay=30)] * 3)
    start = time.monotonic()
    with pytest.raises(vlm.VLMError, match=r"no answer within the 0.3 s timeout"):
        client(tmp_path, timeout=0.3, max_retries=1).ask(
            make_request(png, server), key_of(fake_key)
        )
    assert time.monotonic() - start < 3.0
    assert server.count == 2


def test_an_unreachable_server_is_retried_then_named(tmp_path, png, fake_key):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    request = vlm.VLMRequest(png, "gpt-4o", "x", base_url=f"http://127.0.0.1:{port}/v1")
    # The hook counts attempts: 1 + RETRIES, each refused by the closed port.
    with pytest.raises(
        vlm.VLMError, match=rf"127.0.0.1:{port}/v1 did not answer after 3.*could not connect"
    ):
        client(tmp_path).ask(request, key_of(fake_key))


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejected_key_says_where_it_was_read_and_never_shows_it(
    server, tmp_path, png, fake_key, status
):
    # A careless server echoes the whole key back.
    server.script(
        Reply(
            status,
            helper.error_json(
                f"Incorrect API key provided: {fake_key}.",
                "invalid_request_error",
                "invalid_api_key",
            ),
        )
    )
    with pytest.raises(vlm.VLMError) as info:
        client(tmp_path).ask(make_request(png, server), key_of(fake_key))
    message = str(info.value)
    assert f"rejected by {server.base_url} (HTTP {status})" in message
    assert f"environment variable {KEY_ENV}" in message
    assert fake_key not in message
    assert_secret_free(info.value, fake_key)
    assert server.count == 1  # not retried


def test_a_rejected_key_from_a_bound_key_file_names_the_file_and_binding(
    server, tmp_path, png, fake_key
):
    key_dir = tmp_path / "user" / "__analogist"
    key_dir.mkdir(parents=True)
    key_file = key_dir / "local.key"
    key_file.write_text(f"\n  {fake_key}  \n")
    key_file.chmod(0o600)
    origin = server.base_url[: -len("/v1")]
    (key_dir / vlm.BINDINGS_FILE).write_text(f"# mine\n{origin} = file:local.key\n")
    server.script(Reply(401, helper.error_json("bad key", "invalid_request_error", None)))
    with pytest.raises(vlm.VLMError) as info:
        client(tmp_path).ask(
            make_request(png, server), lambda: vlm.find_api_key(server.base_url, key_dir, {})
        )
    assert f"file {key_file}" in str(info.value) and "vlm_keys.conf line 2" in str(info.value)
    assert fake_key not in str(info.value)
    assert server.requests[0].headers["authorization"] == f"Bearer {fake_key}"


def test_missing_openai_key_explains_env_var_key_file_and_local_servers(tmp_path):
    with pytest.raises(vlm.VLMError) as info:
        vlm.find_api_key(vlm.OPENAI_BASE_URL, tmp_path / "__analogist", {})
    message = str(info.value)
    assert "environment variable OPENAI_API_KEY" in message
    assert str(tmp_path / "__analogist" / "openai_api_key.txt") in message
    assert "base_url" in message and "http://127.0.0.1:11434/v1" in message


def test_an_unbound_local_server_gets_no_authorization_header(server, tmp_path, png):
    api = vlm.find_api_key(server.base_url, tmp_path, {KEY_ENV: "x" * 20})
    assert api.missing and api.value is None
    client(tmp_path).ask(make_request(png, server), api)
    assert "authorization" not in server.requests[0].headers


def test_an_unbound_server_asking_for_a_key_is_told_which_binding_to_add(
    server, tmp_path, png, fake_key
):
    environ = {"OPENAI_API_KEY": fake_key}
    api = vlm.find_api_key(server.base_url, tmp_path / "__analogist", environ)
    server.script(Reply(401, helper.error_json("key needed", "invalid_request_error", None)))
    with pytest.raises(vlm.VLMError) as info:
        client(tmp_path).ask(make_request(png, server), api)
    origin = server.base_url[: -len("/v1")]
    message = str(info.value)
    assert "HTTP 401" in message and "needs an API key" in message
    assert f"`{origin} = env:YOUR_KEY_VARIABLE`" in message
    assert (
        str(tmp_path / "__analogist" / "vlm_keys.conf") in message
        and "ANALOGIST_VLM_KEYS" in message
    )
    assert "authorization" not in server.requests[0].headers


def test_openai_account_ids_from_the_environment_stay_with_openai(
    server, tmp_path, png, fake_key, monkeypatch
):
    # Everything the openai package would add to a request from the environment.
    monkeypatch.setenv("OPENAI_ORG_ID", "org-analogisttest")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_analogisttest")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-analogisttest")
    monkeypatch.setenv("OPENAI_WEBHOOK_SECRET", "whsec_analogisttest")
    monkeypatch.setenv(
        "OPENAI_CUSTOM_HEADERS",
        "X-Api-Key: analogisttest-custom\nAuthorization: Bearer analogisttest-ambient",
    )
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # ignored: the graph decides
    client(tmp_path).ask(make_request(png, server), key_of(fake_key))
    headers = server.requests[0].headers
    assert "analogisttest" not in str(headers)
    assert "openai-organization" not in headers and "openai-project" not in headers
    assert headers["authorization"] == f"Bearer {fake_key}"


def test_an_api_key_pasted_into_api_key_env_is_refused_without_echo(fake_key):
    hex_key = secrets.token_hex(20)
    for pasted in (fake_key, hex_key):
        with pytest.raises(vlm.VLMError, match="NAME of an environment variable") as info:
            vlm.check_env_name(pasted)
        assert pasted not in str(info.value)


def test_a_redirect_is_not_followed_and_carries_the_key_nowhere(server, tmp_path, png, fake_key):
    other = helper.ChatServer().start()
    try:
        for status in (301, 302, 307, 308):
            server.script(
                Reply(status, body="", headers={"Location": f"{other.base_url}/chat/completions"})
            )
            with pytest.raises(vlm.VLMError) as info:
                client(tmp_path).ask(make_request(png, server, seed=status), key_of(fake_key))
            assert f"redirect (HTTP {status}) to {other.base_url}/chat/completions" in str(
                info.value
            )
            assert "not followed" in str(info.value) and fake_key not in str(info.value)
        assert other.count == 0, "the redirect target was contacted"
        assert server.count == 4  # a redirect is an answer, not retried
    finally:
        other.close()


def test_a_404_points_at_model_name_and_base_url(server, tmp_path, png, fake_key):
    bad = make_request(png, server, base_url=server.base_url[: -len("/v1")])  # forgot /v1
    with pytest.raises(vlm.VLMError, match=r"404 for model 'gpt-4o'.*ends with the API root"):
        client(tmp_path).ask(bad, key_of(fake_key))


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(text=""), "empty answer"),
        (Reply(body=helper.completion_json(None)), "empty answer"),
        (Reply(text="   "), "empty answer"),
        (Reply(body=helper.completion_json(None, refusal="I can't help with that.")), "refused"),
        (Reply(text="I'm sorry, but I can't identify this image."), "refused"),
        (Reply(body=helper.completion_json("", finish_reason="content_filter")), "content filter"),
        (
            Reply(body="<html>502 Bad Gateway</html>", content_type="text/html"),
            "not a chat completion",
        ),
        (Reply(body="{truncated"), "malformed"),
        (Reply(body={"id": "x", "object": "chat.completion"}), "no choices"),
    ],
)
def test_empty_refused_or_malformed_answers_are_errors(
    server, tmp_path, png, fake_key, reply, error
):
    server.script(reply)
    with pytest.raises(vlm.VLMError, match=error):
        client(tmp_path).ask(make_request(png, server), key_of(fake_key))
    assert server.count == 1  # an answer that came back is not retried


def test_fewer_prompts_than_asked_from_the_server_is_an_error(server, tmp_path, png, fake_key):
    server.script(Reply(text="smiling woman, cartoon woman"))
    with pytest.raises(vlm.VLMError, match="asked for 3 prompts, the model gave 2"):
        client(tmp_path).ask(make_request(png, server, num_prompts=3), key_of(fake_key))


def test_a_long_answer_is_cut_to_max_words(server, tmp_path, png, fake_key, caplog):
    server.script(Reply(text="A smiling woman drawn as a caricature with a huge head."))
    with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
        result = client(tmp_path).ask(make_request(png, server, max_words=4), key_of(fake_key))
    assert result.prompts == ["A smiling woman drawn"]
    assert "more than max_words=4" in caplog.text


# --------------------------------------------------------------------------- secrets


def test_the_key_never_appears_in_any_log_record_or_error(
    server, tmp_path, png, fake_key, all_logs
):
    server.script(
        Reply(),  # success
        Reply(429, helper.error_json("slow", "requests", None)),
        Reply(),  # retried success
        Reply(401, helper.error_json(f"Incorrect API key provided: {fake_key}", "x", None)),
        *[Reply(500, helper.error_json(f"internal, key={fake_key}", "server_error", None))] * 3,
        Reply(text=f"I'm sorry, I won't use {fake_key}"),
    )
    errors = []
    for seed in range(5):
        try:
            client(tmp_path).ask(make_request(png, server, seed=seed), key_of(fake_key))
        except vlm.VLMError as exc:
            errors.append(exc)
    assert len(errors) == 3
    assert server.count == 8
    assert all(r.headers["authorization"] == f"Bearer {fake_key}" for r in server.requests)

    assert any(r.name.startswith("openai") for r in all_logs.records)  # their DEBUG was captured
    assert any(r.name.startswith("httpx") for r in all_logs.records)
    for record in all_logs.records:
        assert fake_key not in record.getMessage(), record.name
        assert fake_key not in str(record.args)
        assert fake_key not in (record.exc_text or "")
    assert fake_key not in all_logs.text
    for exc in errors:
        assert fake_key not in str(exc)
        assert_secret_free(exc, fake_key)


def test_api_key_repr_never_shows_the_value(fake_key):
    api = vlm.ApiKey(fake_key, "environment variable X")
    assert fake_key not in repr(api) and fake_key not in str(api)
