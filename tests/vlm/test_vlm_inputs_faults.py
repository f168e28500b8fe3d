"""Issue 23: the keys file, base_url and the answer cache under careless or hostile input.

* the bindings file: a UTF-8 byte-order mark (Notepad) is accepted, a folder in its place
  is an error, a file or folder others can write is warned about (they could bind your
  key to their server);
* base_url with a tab, a line break or full-width digits is refused when validated,
  naming the character (Python's URL parser dropped or accepted them, and the HTTP
  library failed later with "InvalidURL");
* the answer cache is capped and cleaned, and a write on a really full filesystem (a
  small tmpfs, mounted for the test) leaves no ``.tmp-*`` file and no half entry.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time

import numpy as np
import pytest
import support.chat_server as helper
import torch
from comfyui_analogist import analogist_vlm as vlm
from comfyui_analogist.analogist_vlm import cache as cache_module
from comfyui_analogist.nodes import vlm as gpt4v
from support.fake_secrets import make_secret


@pytest.fixture
def chat():
    server = helper.ChatServer().start()
    yield server
    server.close()


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt4v, "user_directory", lambda: tmp_path / "user")
    monkeypatch.setattr(gpt4v, "MAX_RETRIES", 0)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    monkeypatch.delenv(vlm.BINDINGS_ENV, raising=False)
    folder = tmp_path / "user" / "__analogist"
    folder.mkdir(parents=True)
    folder.chmod(0o700)
    return tmp_path / "user"


def origin(server) -> str:
    return server.base_url[: -len("/v1")]


def run_node(base_url: str, seed: int = 0):
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
        vlm.DEFAULT_KEY_ENV,
        5.0,
    )


# --------------------------------------------------------------------------- the keys file


def test_a_bindings_file_and_key_file_saved_with_a_bom_work(chat, user_dir):
    folder = user_dir / "__analogist"
    key = make_secret("k")
    (folder / "chat.key").write_bytes(b"\xef\xbb\xbf" + key.encode() + b"\r\n")
    (folder / "chat.key").chmod(0o600)
    (folder / vlm.BINDINGS_FILE).write_bytes(
        b"\xef\xbb\xbf" + f"{origin(chat)} = file:chat.key\r\n".encode()
    )
    run_node(chat.base_url)
    assert chat.requests[0].headers["authorization"] == f"Bearer {key}"


def test_a_folder_named_like_the_bindings_file_is_an_error(chat, user_dir):
    (user_dir / "__analogist" / vlm.BINDINGS_FILE).mkdir()
    with pytest.raises(
        vlm.VLMError, match=r"vlm_keys.conf is a folder .*no binding in it can be read"
    ):
        run_node(chat.base_url)
    assert chat.count == 0


@pytest.mark.parametrize(
    ("file_mode", "folder_mode", "warned"),
    [
        (0o646, 0o700, "its file is writable by group or others"),
        (0o620, 0o700, "its file is writable by group or others"),
        (0o600, 0o777, "its folder is writable by group or others"),
        (0o600, 0o1777, None),  # sticky folder: others cannot replace the file
        (0o600, 0o700, None),
    ],
)
def test_a_bindings_file_others_can_write_is_warned_about(
    chat, user_dir, caplog, file_mode, folder_mode, warned
):
    folder = user_dir / "__analogist"
    path = folder / vlm.BINDINGS_FILE
    path.write_text("# no bindings yet\n")
    path.chmod(file_mode)
    folder.chmod(folder_mode)
    try:
        with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
            run_node(chat.base_url)
    finally:
        folder.chmod(0o700)
    if warned:
        assert f"the key bindings file {path} can be changed by other users ({warned})" in (
            caplog.text
        )
        assert "bind your keys to their own server" in caplog.text
    else:
        assert "can be changed by other users" not in caplog.text


# --------------------------------------------------------------------------- base_url


BAD_URLS = {
    "a tab": ("http://127.0.0.1:80\t80/v1", "a tab at position 20"),
    "a line break": ("http://127.0.0.1:8080/v1\nX-Evil: 1", "a line break at position 25"),
    "a CR": ("http://127.0.0.1:8080\r/v1", "a line break (CR) at position 22"),
    "full-width digits": ("http://127.0.0.1:８０８０/v1", "the character U+FF18 (not ASCII"),
    "a no-break space": ("http://127.0.0.1:8080/\u00a0v1", "the character U+00A0"),
    "a space": ("http://127.0.0.1:8080/my v1", "a space at position 25"),
}


@pytest.mark.parametrize("case", list(BAD_URLS))
def test_a_url_with_invisible_or_full_width_characters_is_refused_at_validation(case):
    url, problem = BAD_URLS[case]
    message = gpt4v.AnalogistGPT4VPrompt.VALIDATE_INPUTS(base_url=url, api_key_env="")
    assert isinstance(message, str)
    assert f"base_url has {problem}" in message and "printable ASCII" in message
    assert "InvalidURL" not in message


def test_a_bindings_file_server_with_full_width_digits_is_a_clear_error(user_dir):
    (user_dir / "__analogist" / vlm.BINDINGS_FILE).write_text("http://127.0.0.1:８０ = env:K\n")
    with pytest.raises(vlm.VLMError, match=r"line 1: the server has the character U\+FF18"):
        vlm.find_api_key("http://127.0.0.1:8000/v1", user_dir / "__analogist", {})


# --------------------------------------------------------------------------- the answer cache


def fill(cache, count, start=0):
    for i in range(start, start + count):
        cache.put(f"{i:064x}", [f"prompt {i}"], f"answer {i}", "m")
        os.utime(cache.path(f"{i:064x}"), (1_000_000 + i, 1_000_000 + i))  # i = age order


def test_the_cache_keeps_at_most_its_entry_count_dropping_the_oldest(tmp_path):
    cache = vlm.AnswerCache(tmp_path, max_entries=5)
    fill(cache, 8)
    kept = sorted(p.name for p in tmp_path.glob("*.json"))
    assert kept == sorted(f"{i:064x}.json" for i in range(3, 8))
    assert cache.get(f"{7:064x}", 1) == ["prompt 7"]


def test_the_cache_keeps_at_most_its_byte_size(tmp_path):
    cache = vlm.AnswerCache(tmp_path, max_bytes=4096)
    fill(cache, 40)
    total = sum(p.stat().st_size for p in tmp_path.glob("*.json"))
    assert 0 < total <= 4096
    assert (tmp_path / f"{39:064x}.json").exists() and not (tmp_path / f"{0:064x}.json").exists()


def test_a_huge_raw_answer_is_not_stored_whole(tmp_path):
    cache = vlm.AnswerCache(tmp_path)
    cache.put("a" * 64, ["cat"], "x" * (1 << 20), "m")
    assert cache.path("a" * 64).stat().st_size < 2 * cache_module.MAX_STORED_ANSWER
    assert cache.get("a" * 64, 1) == ["cat"]


def test_an_oversized_entry_from_an_old_version_is_not_read(tmp_path):
    cache = vlm.AnswerCache(tmp_path)
    cache.put("d" * 64, ["cat"], "cat", "m")
    entry = json.loads(cache.path("d" * 64).read_text())
    entry["answer"] = "x" * (10 << 20)  # as stored whole before the cap
    cache.path("d" * 64).write_text(json.dumps(entry))
    assert cache.get("d" * 64, 1) is None


def test_stale_temporary_files_are_cleaned_fresh_ones_kept(tmp_path):
    stale, fresh = tmp_path / ".tmp-dead.json", tmp_path / ".tmp-writing.json"
    stale.write_text("{")
    fresh.write_text("{")
    old = time.time() - 2 * cache_module.STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    vlm.AnswerCache(tmp_path).put("b" * 64, ["cat"], "cat", "m")
    assert not stale.exists() and fresh.exists()


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs, filled up: a real ENOSPC for the cache's write."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}")
    try:
        cache_dir = mount / "vlm_cache"
        cache_dir.mkdir()
        fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # ENOSPC: full
        finally:
            os.close(fd)
        yield cache_dir
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_failed_write_on_a_full_disk_leaves_nothing_behind(full_disk, caplog):
    cache = vlm.AnswerCache(full_disk)
    with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
        cache.put("c" * 64, ["cat"], "long answer " * 1000, "m")
    assert "could not write the prompt cache" in caplog.text
    assert "No space left on device" in caplog.text
    assert list(full_disk.iterdir()) == []
    assert cache.get("c" * 64, 1) is None
