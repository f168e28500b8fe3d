"""Keys through the real ComfyUI server: a full Analogist graph with the GPT-4V node runs
against local chat-completions servers.

* The key bound (in ``user/__analogist/vlm_keys.conf``) to a server reaches that server,
  and appears in neither the saved image, the history, nor the server's log.
* Hostile workflows (other variables named, OpenAI's key with a foreign base_url, a
  redirect to another host, credentials in the URL) send no secret anywhere, and a URL
  carrying credentials is refused before it reaches history, log or image.
"""

from __future__ import annotations

import json

import pytest
from PIL import Image
from support.chat_server import ChatServer, Reply
from support.comfy_server import ComfyServer, make_workspace
from support.fake_secrets import make_secret
from support.images import save_pattern
from support.prompts import PAPER_RANGE, grid_nodes, inpaint_conditioning, sample_and_crop
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

KEY_ENV = "ANALOGIST_TEST_VLM_KEY"
VLM_ANSWER = "glowing neon portrait"
NEGATIVE = (
    "Messy,Disordered,Chaotic,Cluttered,Haphazard,Unkempt,Scattered,Disheveled,Tangled,Random"
)


def analogist_vlm_prompt(base_url: str, cell: int = 64, steps: int = 2) -> dict:
    """The paper's pipeline as an API prompt, VLM prompt included, at toy size."""
    layout = ["5", 3]
    return {
        **grid_nodes(checkpoint_name(0), ("a.png", "a_prime.png", "b.png"), cell),
        "6": {
            "class_type": "AnalogistMarkAndArrow",
            "inputs": {
                "grid": ["5", 1],
                "layout": layout,
                "label_size": 0,
                "label_color": "#000000",
                "text_color": "#FFFFFF",
                "arrow_color": "#E60000",
                "arrow_width": 0,
                "draw_labels": True,
                "draw_arrows": True,
            },
        },
        "7": {
            "class_type": "AnalogistGPT4VPrompt",
            "inputs": {
                "image": ["6", 0],
                "model": "gpt-4o",
                "instruction": "Describe B' in at most {max_words} words. {request}",
                "num_prompts": 1,
                "max_words": 5,
                "suffix": ", best quality, extremely detailed",
                "base_url": base_url,
                "seed": 0,
                "api_key_env": KEY_ENV,
                "timeout": 30.0,
            },
        },
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": ["7", 0], "clip": ["1", 1]}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "10": inpaint_conditioning("8", "9"),
        "11": {
            "class_type": "AnalogistSACPatch",
            "inputs": {"model": ["1", 0], "layout": layout, "sac_scale": 1.3, **PAPER_RANGE},
        },
        "12": {
            "class_type": "AnalogistCAMPatch",
            "inputs": {"model": ["11", 0], "layout": layout, **PAPER_RANGE},
        },
        **sample_and_crop(
            13, model=["12", 0], conditioning="10", steps=steps, cfg=15.0, prefix="analogist"
        ),
    }


class Rig:
    """One ComfyUI server, its user's secrets, and three chat servers: `chat` is bound to
    the user's key, `redirector` too (it answers with redirects), `foreign` to nothing."""

    def __init__(self, base, checkpoint):
        self.secrets = {
            KEY_ENV: make_secret("sk-test-"),
            "AWS_SECRET_ACCESS_KEY": make_secret(""),
            "OPENAI_API_KEY": make_secret("sk-"),
            "GITHUB_TOKEN": make_secret("ghp_"),
        }
        self.key = self.secrets[KEY_ENV]
        self.chat, self.redirector, self.foreign = (ChatServer().start() for _ in range(3))
        for server in (self.chat, self.redirector, self.foreign):
            server.default_text = VLM_ANSWER
        self.workspace = make_workspace(base, models={"checkpoints": [checkpoint]})
        for seed, name in enumerate(("a.png", "a_prime.png", "b.png")):
            save_pattern(self.workspace / "input" / name, 96, 80, seed=seed)
        keys = self.workspace / "user" / "__analogist"
        keys.mkdir(parents=True)
        (keys / "vlm_keys.conf").write_text(
            f"# the user's own bindings\n"
            f"http://127.0.0.1:{self.chat.port} = env:{KEY_ENV}\n"
            f"http://127.0.0.1:{self.redirector.port} = env:{KEY_ENV}\n"
        )
        self.server = ComfyServer(self.workspace, env=self.secrets).start()

    def close(self):
        self.server.stop()
        for server in (self.chat, self.redirector, self.foreign):
            server.close()

    def secrets_in(self, text: str) -> list[str]:
        return [name for name, value in self.secrets.items() if value in text]


@pytest.fixture(scope="module")
def rig(tmp_path_factory, sd15_checkpoint):
    rig = Rig(tmp_path_factory.mktemp("comfyui"), sd15_checkpoint)
    yield rig
    rig.close()


def vlm_prompt(base_url: str, api_key_env: str, seed: int = 0) -> dict:
    prompt = analogist_vlm_prompt(base_url)
    prompt["7"]["inputs"].update(api_key_env=api_key_env, seed=seed)
    return prompt


def test_api_key_stays_out_of_saved_images_history_and_logs(rig):
    chat, key, server, workspace = rig.chat, rig.key, rig.server, rig.workspace
    result = server.run(analogist_vlm_prompt(chat.base_url))
    assert result.ok, result.error_text() + "\n" + server.log_tail()
    history = json.dumps(server.history())
    log = server.log_text()
    saved = [
        workspace / "output" / img["subfolder"] / img["filename"] for img in result.images("16")
    ]

    # The key really was used: the VLM server got it, and its answer reached the graph.
    assert chat.requests, "the GPT-4V node never called the server"
    assert chat.requests[0].headers["authorization"] == f"Bearer {key}"
    assert VLM_ANSWER in json.dumps(result.outputs["7"])
    # ...and it is nowhere a user could share it.
    assert len(saved) == 1
    image = Image.open(saved[0])
    assert image.size == (96, 80), "GridCrop restores B's original size"
    metadata = json.dumps(image.info)
    assert "prompt" in image.info and "AnalogistGPT4VPrompt" in metadata
    assert key not in metadata
    assert key not in saved[0].read_bytes().decode("latin-1")
    assert key not in history
    assert key not in log


def test_hostile_workflows_send_no_secret_anywhere(rig):
    server, foreign, chat = rig.server, rig.foreign, rig.chat
    hostile = [
        (foreign.base_url, "AWS_SECRET_ACCESS_KEY"),
        (foreign.base_url, "OPENAI_API_KEY"),
        (foreign.base_url, "GITHUB_TOKEN"),
        (foreign.base_url, KEY_ENV),  # the key the user bound, to another server
        (f"http://localhost:{chat.port}/v1", KEY_ENV),  # the bound server under another name
    ]
    before = foreign.count + chat.count
    for seed, (base_url, api_key_env) in enumerate(hostile, start=100):
        result = server.run(vlm_prompt(base_url, api_key_env, seed))
        assert result.ok, result.error_text() + "\n" + server.log_tail()
        assert VLM_ANSWER in json.dumps(result.outputs["7"])
    assert foreign.count + chat.count == before + len(hostile)  # every one asked a server
    received = json.dumps([[r.headers, r.body] for r in foreign.requests + chat.requests[-1:]])
    assert rig.secrets_in(received) == []
    assert all("authorization" not in r.headers for r in foreign.requests + chat.requests[-1:])
    log = server.log_text()
    assert "api_key_env is set in this workflow and ignored" in log
    # What a workflow names is never echoed: a shared one may carry a pasted key there.
    assert "AWS_SECRET_ACCESS_KEY" not in log and "GITHUB_TOKEN" not in log
    assert rig.secrets_in(server.log_text() + json.dumps(server.history())) == []


def test_a_redirect_to_another_host_carries_no_key(rig):
    server, redirector, foreign = rig.server, rig.redirector, rig.foreign
    before = foreign.count
    redirector.script(
        Reply(307, body="", headers={"Location": f"{foreign.base_url}/chat/completions"})
    )
    result = server.run(vlm_prompt(redirector.base_url, KEY_ENV, seed=200))
    assert not result.ok and "redirect (HTTP 307)" in result.error_text()
    assert redirector.requests[-1].headers["authorization"] == f"Bearer {rig.key}"  # bound
    assert foreign.count == before, "the redirect was followed"
    assert rig.secrets_in(server.log_text() + json.dumps(server.history())) == []


def test_credentials_in_base_url_are_refused_before_history_log_or_image(rig):
    server, foreign = rig.server, rig.foreign
    password = make_secret("")
    before_count, before_images = foreign.count, set((rig.workspace / "output").rglob("*.png"))
    for base_url in (
        f"http://analogist:{password}@127.0.0.1:{foreign.port}/v1",
        f"http://127.0.0.1:{foreign.port}/v1?api_key={password}",
    ):
        result = server.run(vlm_prompt(base_url, "", seed=300))
        assert not result.ok
        errors = json.dumps(result.node_errors)
        assert "must not carry credentials" in errors and "vlm_keys.conf" in errors
        assert password not in result.error_text().replace(
            base_url, ""
        )  # echoed only to its sender
    assert foreign.count == before_count
    assert set((rig.workspace / "output").rglob("*.png")) == before_images
    assert password not in server.log_text()
    assert password not in json.dumps(server.history())


def _errors_by_input(result) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in result.node_errors.get("7", {}).get("errors", []):
        found.setdefault(error["extra_info"]["input_name"], []).append(error["details"])
    return found


def test_a_key_pasted_into_api_key_env_is_refused_naming_that_input_and_where_keys_go(rig):
    """Issue 22: the refusal names api_key_env (not base_url) and says where a key goes;
    issue 23: nothing is queued, and the key is in no answer, history or log."""
    server, chat = rig.server, rig.chat
    pasted = make_secret("sk-proj-")
    before = chat.count
    result = server.run(vlm_prompt(chat.base_url, pasted, seed=400))
    assert not result.ok and result.node_errors, result.error_text()
    errors = _errors_by_input(result)
    (message,) = errors["api_key_env"]
    assert message.startswith("api_key_env - api_key_env holds what looks like an API key")
    assert "OPENAI_API_KEY" in message and "openai_api_key.txt" in message
    assert "vlm_keys.conf" in message and "base_url" not in message.split(" - ", 1)[1]
    assert pasted not in json.dumps(result.node_errors)
    assert chat.count == before
    assert pasted not in server.log_text() and pasted not in json.dumps(server.history())


def test_base_url_refusal_is_about_base_url(rig):
    server, foreign = rig.server, rig.foreign
    result = server.run(vlm_prompt(f"http://127.0.0.1:{foreign.port}/v1?key=x", "", seed=401))
    assert not result.ok
    errors = _errors_by_input(result)
    (message,) = errors["base_url"]
    assert "must not carry credentials" in message and "api_key_env" not in message


def test_the_vision_prompt_node_is_found_by_what_artists_search_for(rig):
    info = rig.server.object_info()["AnalogistGPT4VPrompt"]
    assert info["display_name"] == "Analogist Vision Prompt"
    assert info["input"]["required"]["api_key_env"][1]["default"] == ""
    if "search_aliases" not in info:
        pytest.skip("this ComfyUI's /object_info has no search_aliases (0.30.0 has)")
    for phrase in ("gpt-4v", "ollama", "lm studio", "vision language", "prompt from image"):
        assert phrase in info["search_aliases"], phrase
