"""ReVersion's training node inside the real ComfyUI server, with a random full-size SD1.5.

Trains <R> for a few steps on the goldens' exemplar folder (copied into the server's input
folder), then uses ``embedding:<name>`` in a CLIPTextEncode of the same server and checks
that the conditioning changed (the sampled image differs from the prompt with the
initializer word, which is where <R> started). Interrupting a run through ``/interrupt``
leaves the last intermediate embedding and nothing under the final name. Bad inputs come
back as errors that name the input.
"""

from __future__ import annotations

import io
import shutil
import time
import uuid

import numpy as np
import pytest
from PIL import Image
from support import reversion as rv
from support.comfy_server import ComfyServer, make_workspace

pytestmark = pytest.mark.host

SMALL = {
    "batch_size": 1, "gradient_accumulation": 1, "resolution": 64, "repeats": 1, "save_every": 1,
    "learning_rate": 0.05, "scale_lr": False,
}  # fmt: skip


def host_problem():
    from comfyui_analogist.analogist_reversion.comfy_parts import host_backprop_problem

    return host_backprop_problem()  # the in-process comfy is the server's host


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    checkpoint = rv.cached_sd15_checkpoint()
    workspace = make_workspace(
        tmp_path_factory.mktemp("comfyui-reversion"), models={"checkpoints": [checkpoint]}
    )
    (workspace / "models" / "embeddings").mkdir(parents=True, exist_ok=True)
    shutil.copytree(rv.GOLDENS / "exemplars", workspace / "input" / "relation")
    server = ComfyServer(workspace).start()
    yield server
    server.stop()


def learn_prompt(embedding: str, steps: int, **overrides) -> dict:
    inputs = {"model": ["1", 0], "clip": ["1", 1], "vae": ["1", 2], "name": embedding, "captions": "",
              "steps": steps, "folder": "relation", **SMALL, **overrides}  # fmt: skip
    return {
        "1": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": rv.sd15_checkpoint_name()},
        },
        "2": {"class_type": "AnalogistReVersionLearn", "inputs": inputs},
    }


def sample_prompt(text: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": rv.sd15_checkpoint_name()}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": ""}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 1, "steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }  # fmt: skip


def test_node_trains_and_the_embedding_changes_the_conditioning(server):
    if host_problem() is not None:
        result = server.run(learn_prompt("painted", steps=2))
        assert not result.ok and "Update ComfyUI" in result.error_text(), result.error_text()
        assert not (server.workspace / "models" / "embeddings" / "painted.safetensors").exists()
        pytest.skip(f"training refused on this host, as it must be: {host_problem()}")
    # on a busy shared CPU one step can take minutes
    result = server.run(learn_prompt("painted", steps=2), timeout=1800)
    assert result.ok, result.error_text()
    embeddings = server.workspace / "models" / "embeddings"
    assert (embeddings / "painted.safetensors").is_file()
    assert (embeddings / "painted-training" / "painted-step000001.safetensors").is_file()
    with_r = server.run(sample_prompt("cat embedding:painted stone"))
    with_init = server.run(sample_prompt("cat and stone"))
    assert with_r.ok and with_init.ok, with_r.error_text() + with_init.error_text()
    assert "embedding:painted does not exist" not in server.log_text()
    image_r = server.view(with_r.images("7")[0])
    image_init = server.view(with_init.images("7")[0])
    assert image_r != image_init


def test_the_same_name_again_is_refused_and_the_file_kept(server):
    path = server.workspace / "models" / "embeddings" / "painted.safetensors"
    if not path.exists():
        pytest.skip("needs the embedding of the training test")
    before = path.read_bytes()
    result = server.run(learn_prompt("painted", steps=1))
    assert (
        not result.ok
        and "already exists" in result.error_text()
        and "new name" in result.error_text()
    )
    assert path.read_bytes() == before


def test_interrupt_leaves_the_last_intermediate_and_no_final_file_and_queueing_again_resumes(
    server,
):
    if host_problem() is not None:
        pytest.skip(f"no training on this host: {host_problem()}")
    prompt = learn_prompt(
        "stopped", steps=3
    )  # a step takes tens of seconds here: /interrupt lands first
    prompt["3"] = {"class_type": "PreviewImage", "inputs": {"images": ["2", 1]}}  # the loss curve
    status, body = server.post_json("/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    assert status == 200, body
    folder = server.workspace / "models" / "embeddings"
    first = folder / "stopped-training" / "stopped-step000001.safetensors"
    deadline = time.monotonic() + 1800
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.exists(), server.log_tail()
    server.post_json("/interrupt", {})
    entry = {}
    while time.monotonic() < deadline:
        entry = server.get_json(f"/history/{body['prompt_id']}").get(body["prompt_id"], {})
        if entry.get("status", {}).get("completed") is not None:
            break
        time.sleep(0.5)
    messages = [m[0] for m in entry.get("status", {}).get("messages", [])]
    assert "execution_interrupted" in messages, entry
    assert not (folder / "stopped.safetensors").exists()
    assert sorted(p.name for p in (folder / "stopped-training").glob("stopped-step*.safetensors"))
    assert not list(folder.rglob("*.partial"))
    assert (folder / "stopped-training" / "resume.state").is_file()

    # the same name and settings: continues from the last save
    resumed = server.run(prompt, timeout=1800)
    assert resumed.ok, resumed.error_text()
    assert "resuming at step" in server.log_text()
    assert (folder / "stopped.safetensors").is_file()
    curve = Image.open(io.BytesIO(server.view(resumed.images("3")[0])))
    assert curve.size == (512, 256) and np.asarray(curve.convert("L")).min() < 128  # a drawn plot


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"folder": "../"}, "outside ComfyUI's input folder"),
        ({"folder": "nothing_here"}, "is not a folder inside ComfyUI's input folder"),
        ({"name": "../evil"}, "not usable as an embedding name"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(server, overrides, expected):
    result = server.run(learn_prompt(f"bad_{uuid.uuid4().hex[:6]}", steps=1, **overrides))
    assert not result.ok and expected in result.error_text(), result.error_text()


def test_an_empty_folder_and_captions_without_placeholder_are_refused(server):
    empty = server.workspace / "input" / "empty"
    empty.mkdir(exist_ok=True)
    result = server.run(learn_prompt("bad_empty", steps=1, folder="empty"))
    assert not result.ok and "holds no images" in result.error_text(), result.error_text()
    (server.workspace / "input" / "cat.png").write_bytes(
        (rv.GOLDENS / "exemplars" / "cat_stone.png").read_bytes()
    )
    prompt = learn_prompt("bad_captions", steps=1, folder="", captions="cat stone")
    prompt["3"] = {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}
    prompt["2"]["inputs"]["images"] = ["3", 0]
    result = server.run(prompt)
    assert not result.ok and "must contain '{}'" in result.error_text(), result.error_text()
