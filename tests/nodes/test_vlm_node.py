"""AnalogistGPT4VPrompt as ComfyUI sees it: declaration, image round trip and size cap,
outputs, the key bindings in the user directory, VALIDATE_INPUTS, the frontend extension,
and life without ``openai``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import support.chat_server as helper
import torch
from comfyui_analogist import analogist_vlm as vlm
from comfyui_analogist.nodes import vlm as gpt4v
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "ANALOGIST_TEST_NODE_KEY"


@pytest.fixture
def server():
    srv = helper.ChatServer().start()
    yield srv
    srv.close()


@pytest.fixture
def fake_key(fake_key, monkeypatch):
    """The shared fake key (tests/conftest.py), in the environment variable a binding names."""
    monkeypatch.setenv(KEY_ENV, fake_key)
    return fake_key


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt4v, "user_directory", lambda: tmp_path / "user")
    monkeypatch.setattr(gpt4v, "MAX_RETRIES", 1)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the openai client's backoff
    monkeypatch.delenv(vlm.BINDINGS_ENV, raising=False)
    return tmp_path / "user"


def bind(user_dir, server, source):
    """Bind ``source`` (``env:NAME`` / ``file:PATH``) to the chat server, as a user would."""
    folder = user_dir / "__analogist"
    folder.mkdir(parents=True, exist_ok=True)
    origin = server.base_url[: -len("/v1")]
    with open(folder / vlm.BINDINGS_FILE, "a") as f:
        f.write(f"{origin} = {source}\n")


def grid_batch(batch=2, height=40, width=56, seed=0):
    """Float images made from uint8 pixels, as LoadImage makes them; and those pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), dtype=np.uint8)
    return torch.from_numpy(pixels.astype(np.float32) / 255.0), pixels


def run(server, image, **changes):
    inputs = dict(
        image=image,
        model="gpt-4o",
        instruction=vlm.DEFAULT_INSTRUCTION,
        num_prompts=1,
        max_words=5,
        suffix=", best quality, extremely detailed",
        base_url=server.base_url,
        seed=0,
        api_key_env=KEY_ENV,
        timeout=5.0,
    )
    inputs.update(changes)
    return gpt4v.AnalogistGPT4VPrompt().ask(**inputs)


# --------------------------------------------------------------------------- declaration


def test_node_is_registered_with_a_tooltip_on_every_input_and_output():
    assert gpt4v.NODE_CLASS_MAPPINGS == {"AnalogistGPT4VPrompt": gpt4v.AnalogistGPT4VPrompt}
    # A name the node library shows whole (it cuts past ~28 characters) that does not sell
    # the node as OpenAI-only; the id stays, so saved workflows load.
    assert gpt4v.NODE_DISPLAY_NAME_MAPPINGS["AnalogistGPT4VPrompt"] == "Analogist Vision Prompt"
    assert len(gpt4v.NODE_DISPLAY_NAME_MAPPINGS["AnalogistGPT4VPrompt"]) <= 28
    node = gpt4v.AnalogistGPT4VPrompt
    required = node.INPUT_TYPES()["required"]
    assert list(required) == [
        "image",
        "model",
        "instruction",
        "num_prompts",
        "max_words",
        "suffix",
        "base_url",
        "seed",
        "api_key_env",
        "timeout",
    ]
    for name, (_, options) in required.items():
        assert options.get("tooltip"), name
    assert node.CATEGORY == "Analogist" and node.DESCRIPTION
    assert node.RETURN_TYPES == ("STRING", "STRING") and node.RETURN_NAMES == ("prompt", "prompts")
    assert node.OUTPUT_IS_LIST == (False, True) and len(node.OUTPUT_TOOLTIPS) == 2
    assert required["model"][1]["default"] == "gpt-4o"
    assert required["num_prompts"][1]["default"] == 1 and required["max_words"][1]["default"] == 5
    assert required["suffix"][1]["default"] == ", best quality, extremely detailed"
    assert required["base_url"][1]["default"] == ""
    # api_key_env stays (name and place) for saved workflows, but no longer looks like the
    # place for a key: empty by default, labelled unused, its tooltip says where keys go.
    key_env = required["api_key_env"][1]
    assert key_env["default"] == ""
    assert "unused" in key_env["display_name"] and "api_key_env" in key_env["display_name"]
    assert "Never type an API key here" in key_env["tooltip"]
    assert "vlm_keys.conf" in key_env["tooltip"] and "openai_api_key.txt" in key_env["tooltip"]
    assert "{request}" in required["instruction"][1]["tooltip"]
    # Braces in the instruction must reach Python untouched by the frontend's {a|b} syntax.
    assert all(
        opts.get("dynamicPrompts") is False for kind, opts in required.values() if kind == "STRING"
    )


def test_shipped_workflow_keeps_the_gpt4v_seed_fixed_so_the_answer_cache_works():
    """Every frontend gives the seed its control widget (the node declares it); a randomizing
    one would ask the model again on every queue, so the shipped graph saves "fixed"."""
    import json
    from pathlib import Path

    from comfyui_analogist.analogist_cli.workflow_format import has_control_value, widget_inputs

    info = {
        "input": {
            k: v
            for k, v in gpt4v.AnalogistGPT4VPrompt.INPUT_TYPES().items()
            if k in ("required", "optional")
        }
    }
    workflow = json.loads(
        (Path(__file__).resolve().parents[2] / "workflows" / "analogist.json").read_text()
    )
    (node,) = [n for n in workflow["nodes"] if n["type"] == "AnalogistGPT4VPrompt"]
    position = 0
    for name, spec in widget_inputs(info):
        position += 1
        if name == "seed":
            assert has_control_value(name, spec)
            assert node["widgets_values"][position] == "fixed"
            break
        position += has_control_value(name, spec)
    else:
        raise AssertionError("the GPT-4V node has no seed widget")


def test_no_input_can_hold_the_key():
    names = set(gpt4v.AnalogistGPT4VPrompt.INPUT_TYPES()["required"])
    assert not names & {"api_key", "key", "token", "secret"}


# --------------------------------------------------------------------------- running


def test_node_sends_the_first_image_at_its_resolution_as_exact_png_pixels(
    server, user_dir, fake_key, caplog
):
    bind(user_dir, server, f"env:{KEY_ENV}")
    images, pixels = grid_batch(batch=2)
    with caplog.at_level(logging.WARNING, logger="analogist.gpt4v"):
        run(server, images)
    assert "batch of 2 grids; only the first" in caplog.text
    content = server.requests[0].body["messages"][0]["content"]
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.format == "PNG" and sent.size == (56, 40) and sent.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(sent), pixels[0])
    assert content[0]["text"] == vlm.render_instruction(vlm.DEFAULT_INSTRUCTION, 1, 5)
    assert server.requests[0].body["model"] == "gpt-4o"
    assert server.requests[0].headers["authorization"] == f"Bearer {fake_key}"


def test_node_outputs_prompt_with_suffix_the_list_and_ui_text(server, user_dir, fake_key):
    server.script(helper.Reply(text="1. smiling woman\n2. cartoon woman\n3. caricature woman"))
    images, _ = grid_batch(batch=1)
    out = run(server, images, num_prompts=3)
    expected = [
        p + ", best quality, extremely detailed"
        for p in ("smiling woman", "cartoon woman", "caricature woman")
    ]
    assert out["result"] == (expected[0], expected)
    assert out["ui"] == {"text": expected}
    assert fake_key not in json.dumps(out)


def test_requeue_and_restart_use_the_disk_cache(server, user_dir, fake_key):
    images, _ = grid_batch(batch=1)
    first = run(server, images, seed=3)
    again = run(server, images, seed=3)  # a new node object each time, as after a restart
    assert again == first and server.count == 1
    assert len(list((user_dir / "__analogist" / "vlm_cache").glob("*.json"))) == 1
    run(server, images, seed=4)
    assert server.count == 2
    # Inputs that do not change the answer are answered from the cache.
    run(server, images, seed=3, suffix=", other", timeout=9.0, api_key_env="OTHER")
    assert server.count == 2


def test_no_is_changed_comfyui_keys_its_cache_on_the_inputs_already():
    assert not hasattr(gpt4v.AnalogistGPT4VPrompt, "IS_CHANGED")


def test_node_bound_key_file_in_the_user_directory_is_used(server, user_dir, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    key = "sk-test-" + secrets.token_hex(20)
    (user_dir / "__analogist").mkdir(parents=True)
    (user_dir / "__analogist" / "local.key").write_text(key + "\n")
    bind(user_dir, server, "file:local.key")
    run(server, grid_batch(batch=1)[0])
    assert server.requests[0].headers["authorization"] == f"Bearer {key}"


def test_api_key_env_no_longer_chooses_a_key_and_says_what_to_do(
    server, user_dir, fake_key, caplog
):
    with caplog.at_level(logging.WARNING, logger="analogist.gpt4v"):
        run(server, grid_batch(batch=1)[0])  # api_key_env=KEY_ENV, as an old workflow has it
    assert "authorization" not in server.requests[0].headers
    notes = [r.getMessage() for r in caplog.records if "and ignored" in r.getMessage()]
    assert len(notes) == 1 and "api_key_env is set in this workflow" in notes[0]
    assert KEY_ENV not in caplog.text  # what a workflow put there is never logged
    origin = server.base_url[: -len("/v1")]
    # A placeholder, not the workflow's name: a shared workflow must not get to suggest
    # binding one of the user's variables to its server.
    assert f"`{origin} = env:YOUR_KEY_VARIABLE`" in notes[0]
    assert str(user_dir / "__analogist" / "vlm_keys.conf") in notes[0]
    assert fake_key not in caplog.text
    caplog.clear()
    bind(user_dir, server, f"env:{KEY_ENV}")  # the user binds what the workflow named
    with caplog.at_level(logging.WARNING, logger="analogist.gpt4v"):
        run(server, grid_batch(batch=1)[0], seed=1)
    assert server.requests[1].headers["authorization"] == f"Bearer {fake_key}"
    assert "and ignored" not in caplog.text


@pytest.mark.parametrize("prefix", ["sk-test-", "gsk_", "hf_", "ghp_", "github_pat_"])
def test_node_refuses_a_key_typed_into_api_key_env(server, user_dir, prefix, caplog):
    from support.fake_secrets import make_secret

    pasted = make_secret(prefix).replace("-", "")  # also when it passes for a variable name
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(vlm.VLMError, match="NAME of an environment variable") as info,
    ):
        run(server, grid_batch(batch=1)[0], api_key_env=pasted)
    assert pasted not in str(info.value) and pasted not in caplog.text and server.count == 0


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "GROQ_API_KEY", "HF_TOKEN", "MY_VLLM_KEY2"])
def test_variable_names_are_still_names(name):
    assert vlm.check_env_name(name) == name


def test_node_errors_are_clear_and_keyless(server, user_dir, fake_key):
    bind(user_dir, server, f"env:{KEY_ENV}")
    server.script(helper.Reply(401, helper.error_json(f"bad key {fake_key}", "x", None)))
    with pytest.raises(vlm.VLMError) as info:
        run(server, grid_batch(batch=1)[0])
    assert f"environment variable {KEY_ENV}" in str(info.value) and fake_key not in str(info.value)


def test_node_times_out_within_bounded_time(server, user_dir, fake_key):
    server.script(*[helper.Reply(delay=30)] * 2)
    with pytest.raises(vlm.VLMError, match="timeout"):
        run(server, grid_batch(batch=1)[0], timeout=0.3)
    assert server.count == 2  # one retry (the test policy)


# --------------------------------------------------------------------------- big grids


@pytest.mark.slow
def test_a_grid_larger_than_vision_models_take_is_downscaled_before_sending(
    server, user_dir, caplog
):
    # 8192 x 8192 as GridCompose can make it; a stride-0 view, so the test needs no 800 MB.
    stripes = torch.rand(1, 1, 8192, 3, generator=torch.Generator().manual_seed(0))
    image = stripes.expand(1, 8192, 8192, 3)
    with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
        run(server, image)
    assert "8192x8192; sending it downscaled to 2048x2048" in caplog.text
    url = server.requests[0].body["messages"][0]["content"][1]["image_url"]["url"]
    sent = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert sent.shape == (vlm.MAX_IMAGE_SIDE, vlm.MAX_IMAGE_SIDE, 3)
    assert (sent == sent[:1]).all()  # the stripes stay vertical stripes
    expected = np.rint(stripes[0, 0].numpy() * 255).mean(axis=0)
    assert np.abs(sent.reshape(-1, 3).mean(axis=0) - expected).max() < 2.0


def test_a_wide_grid_keeps_its_aspect_and_a_small_one_its_pixels():
    wide = np.random.default_rng(0).integers(0, 256, (300, 4100, 3), dtype=np.uint8)
    assert vlm.fit_image(wide).shape == (150, 2048, 3)
    small = wide[:, :2048]
    assert vlm.fit_image(small) is small


# --------------------------------------------------------------------------- VALIDATE_INPUTS


@pytest.mark.parametrize(
    "base_url",
    [
        "http://user:hunter2secret@127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1?api_key=hunter2secret",
        "https://api.openai.com@127.0.0.1:8000/v1",
        "http://127.0.0.1:8000/v1#hunter2secret",
    ],
)
def test_credentials_in_base_url_are_refused_before_the_prompt_runs(base_url, user_dir):
    verdict = gpt4v.AnalogistGPT4VPrompt.VALIDATE_INPUTS(base_url=base_url, api_key_env="")
    assert isinstance(verdict, str) and "must not carry credentials" in verdict
    assert "hunter2secret" not in verdict
    assert "vlm_keys.conf" in verdict and "= env:" in verdict
    with pytest.raises(vlm.VLMError) as info:  # a linked value is caught when it runs
        gpt4v.AnalogistGPT4VPrompt().ask(
            grid_batch(batch=1)[0], "gpt-4o", "x", 1, 5, "", base_url, 0
        )
    assert "hunter2secret" not in str(info.value)


def test_validate_inputs_passes_plain_and_linked_values_and_refuses_a_pasted_key(fake_key):
    validate = gpt4v.AnalogistGPT4VPrompt.VALIDATE_INPUTS
    assert validate(base_url="", api_key_env="OPENAI_API_KEY") is True
    assert validate(base_url="http://127.0.0.1:11434/v1", api_key_env="") is True
    assert validate(base_url=None, api_key_env=None) is True  # linked: checked at run time
    verdict = validate(base_url="", api_key_env=fake_key)
    assert "NAME of an environment variable" in verdict and fake_key not in verdict


# --------------------------------------------------------------------------- host glue


def test_user_directory_comes_from_folder_paths_old_or_new(monkeypatch, tmp_path):
    new = types.ModuleType("folder_paths")
    new.get_user_directory = lambda: str(tmp_path / "new")
    monkeypatch.setitem(sys.modules, "folder_paths", new)
    assert gpt4v.user_directory() == tmp_path / "new"
    assert gpt4v.analogist_directory() == tmp_path / "new" / "__analogist"
    old = types.ModuleType("folder_paths")  # comfyui 0.0.1: an attribute, no getter
    old.user_directory = str(tmp_path / "old")
    monkeypatch.setitem(sys.modules, "folder_paths", old)
    assert gpt4v.user_directory() == tmp_path / "old"


def test_web_extensions_show_ui_text_on_their_own_nodes_only():
    web = ROOT / "web" / "js"
    shared = (web / "text_display.js").read_text()
    assert (
        "registerExtension" in shared and "onExecuted" in shared and "serialize = false" in shared
    )
    imports = [
        line for line in shared.splitlines() if line.startswith("import") or "import(" in line
    ]
    assert imports == ['import { app } from "../../../scripts/app.js";']  # nothing internal
    for name, node_id in (
        ("gpt4v_prompt.js", "AnalogistGPT4VPrompt"),
        ("rank_candidates.js", "AnalogistRankCandidates"),
    ):
        source = (web / name).read_text()
        assert f'"{node_id}"' in source and "registerTextDisplay" in source
    node = shutil.which("node")
    if node:
        for path in web.glob("*.js"):
            subprocess.run([node, "--check", str(path)], check=True)


# --------------------------------------------------------------------------- without openai


def test_without_openai_the_node_registers_disabled_and_says_how_to_fix():
    """A fresh interpreter without ``openai`` imports the node module the one way the pack
    is imported (``analogist.import_pack``): one warning, a disabled entry that still shows
    its widgets, and runs that raise the fix."""
    code = (
        "import json, sys, logging\n"
        "sys.modules['openai'] = None\n"  # makes `import openai` raise
        "records = []\n"
        "class Keep(logging.Handler):\n"
        "    def emit(self, record): records.append((record.name, record.getMessage()))\n"
        "logging.getLogger('analogist.gpt4v').addHandler(Keep())\n"
        "from analogist import import_pack\n"
        "import_pack()\n"
        "import torch\n"
        "from comfyui_analogist import analogist_vlm as vlm\n"
        "from comfyui_analogist.nodes import vlm as module\n"
        "node = module.NODE_CLASS_MAPPINGS['AnalogistGPT4VPrompt']\n"
        "errors = []\n"
        "for call in (lambda: node().ask(torch.full((1, 64, 64, 3), 0.5), 'gpt-4o', 'x', 1, 5,"
        " '', '', 0), vlm.import_openai):\n"
        "    try:\n"
        "        call()\n"
        "    except vlm.VLMError as exc:\n"
        "        errors.append(str(exc))\n"
        "print(json.dumps({'records': records,"
        " 'name': module.NODE_DISPLAY_NAME_MAPPINGS['AnalogistGPT4VPrompt'],"
        " 'description': node.DESCRIPTION, 'required': list(node.INPUT_TYPES()['required']),"
        " 'errors': errors}))\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(seen["records"]) == 1 and "disabled" in seen["records"][0][1]
    assert "disabled" in seen["name"]
    assert (
        seen["description"].startswith("DISABLED") and "pip install openai" in seen["description"]
    )
    assert seen["required"]  # still loads in the menu, widgets intact
    assert len(seen["errors"]) == 2 and all("pip install openai" in e for e in seen["errors"])


def test_the_pack_loads_without_openai():
    code = (
        "import sys\n"
        "sys.modules['openai'] = None\n"
        "from analogist import import_pack\n"
        "import_pack()\n"
        "import comfyui_analogist.nodes as nodes\n"
        "print(nodes.NODE_DISPLAY_NAME_MAPPINGS.get('AnalogistGPT4VPrompt'))\n"
        "print('vlm' in nodes.FAILED_FAMILIES)\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-2] == "Analogist Vision Prompt (disabled: openai missing)"
    assert lines[-1] == "False"
    assert "pip install openai" in done.stderr


# --------------------------------------------------------------------------- example pairs


def test_one_pair_layout_sends_the_papers_instruction_unchanged(server, user_dir, fake_key):
    from comfyui_analogist.analogist_pixels.layout import make_layout

    images, _ = grid_batch(batch=1)
    run(server, images, layout=make_layout())
    run(server, images, seed=1)
    with_layout, without = (r.body["messages"][0]["content"][0]["text"] for r in server.requests)
    assert with_layout == without == vlm.render_instruction(vlm.DEFAULT_INSTRUCTION, 1, 5)


@pytest.mark.parametrize("aligned", [False, True])
def test_several_pairs_are_named_in_the_instruction(server, user_dir, fake_key, aligned):
    from comfyui_analogist.analogist_pixels.layout import ARRANGEMENTS, make_layout

    images, _ = grid_batch(batch=1)
    layout = make_layout(arrangement=ARRANGEMENTS[int(aligned)], pairs=3)
    run(server, images, layout=layout)
    text = server.requests[0].body["messages"][0]["content"][0]["text"]
    assert vlm.PAPER_LEAD_IN not in text
    assert "A1, A2 and A3" in text and "A1', A2' and A3'" in text
    assert "A1 : A1' :: A2 : A2' :: A3 : A3' :: B : B'." in text
    assert ("one pair per column" if aligned else "one pair per row") in text
    assert text.endswith(vlm.request_sentence(1, 5))
    # An instruction of the user's own is sent as typed.
    run(server, images, layout=layout, instruction="Describe B'. {request}", seed=9)
    assert server.requests[1].body["messages"][0]["content"][0]["text"] == (
        "Describe B'. " + vlm.request_sentence(1, 5)
    )


def test_a_wrong_layout_value_is_named(server, user_dir, fake_key):
    images, _ = grid_batch(batch=1)
    with pytest.raises(TypeError, match="layout: expected the ANALOGIST_LAYOUT output"):
        run(server, images, layout="not a layout")


def test_the_optional_layout_input_has_a_tooltip():
    ((kind, options),) = gpt4v.AnalogistGPT4VPrompt.INPUT_TYPES()["optional"].values()
    assert kind == "ANALOGIST_LAYOUT" and "several" in options["tooltip"]
