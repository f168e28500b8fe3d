"""The API key never leaves the process environment: a full Analogist graph with the
GPT-4V node runs in the real ComfyUI server against a local chat-completions server,
and the key appears in neither the saved image, the history, nor the server's log."""

from __future__ import annotations

import json
import secrets

import pytest
from PIL import Image
from support.chat_server import ChatServer
from support.comfy_server import ComfyServer, make_workspace
from support.images import save_pattern
from support.sd15 import checkpoint_name

pytestmark = pytest.mark.host

KEY_ENV = "ANALOGIST_TEST_VLM_KEY"
VLM_ANSWER = "glowing neon portrait"
NEGATIVE = "Messy,Disordered,Chaotic,Cluttered,Haphazard,Unkempt,Scattered,Disheveled,Tangled,Random"


def analogist_vlm_prompt(base_url: str, cell: int = 64, steps: int = 2) -> dict:
    """The paper's pipeline as an API prompt, VLM prompt included, at toy size."""
    layout = ["5", 3]
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint_name(0)}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "3": {"class_type": "LoadImage", "inputs": {"image": "a_prime.png"}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "5": {
            "class_type": "AnalogistGridCompose",
            "inputs": {
                "a": ["2", 0], "a_prime": ["3", 0], "b": ["4", 0], "cell_width": cell,
                "cell_height": cell, "border": 2, "fit": "stretch", "arrangement": "A' right of A (paper)",
            },
        },
        "6": {
            "class_type": "AnalogistMarkAndArrow",
            "inputs": {
                "grid": ["5", 1], "layout": layout, "label_size": 0, "label_color": "#000000",
                "text_color": "#FFFFFF", "arrow_color": "#E60000", "arrow_width": 0,
                "draw_labels": True, "draw_arrows": True,
            },
        },
        "7": {
            "class_type": "AnalogistGPT4VPrompt",
            "inputs": {
                "image": ["6", 0], "model": "gpt-4o",
                "instruction": "Describe B' in at most {max_words} words. {request}",
                "num_prompts": 1, "max_words": 5, "suffix": ", best quality, extremely detailed",
                "base_url": base_url, "seed": 0, "api_key_env": KEY_ENV, "timeout": 30.0,
            },
        },
        "8": {"class_type": "CLIPTextEncode", "inputs": {"text": ["7", 0], "clip": ["1", 1]}},
        "9": {"class_type": "CLIPTextEncode", "inputs": {"text": NEGATIVE, "clip": ["1", 1]}},
        "10": {
            "class_type": "InpaintModelConditioning",
            "inputs": {"positive": ["8", 0], "negative": ["9", 0], "vae": ["1", 2], "pixels": ["5", 0], "mask": ["5", 2],
                       # 0.30.0: keep everything outside the mask (0.0.1 always did; it ignores this)
                       "noise_mask": True},
        },
        "11": {
            "class_type": "AnalogistSACPatch",
            "inputs": {
                "model": ["1", 0], "layout": layout, "sac_scale": 1.3, "start_layer": 3, "end_layer": 11,
                "start_percent": 0.0, "end_percent": 1.0, "passes": "cond and uncond (paper)",
            },
        },
        "12": {
            "class_type": "AnalogistCAMPatch",
            "inputs": {
                "model": ["11", 0], "layout": layout, "start_layer": 3, "end_layer": 11,
                "start_percent": 0.0, "end_percent": 1.0, "passes": "cond and uncond (paper)",
            },
        },
        "13": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["12", 0], "seed": 0, "steps": steps, "cfg": 15.0, "sampler_name": "ddim",
                "scheduler": "normal", "positive": ["10", 0], "negative": ["10", 1],
                "latent_image": ["10", 2], "denoise": 0.98,
            },
        },
        "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["1", 2]}},
        "15": {"class_type": "AnalogistGridCrop", "inputs": {"grid": ["14", 0], "layout": layout, "output_size": "original size of B"}},
        "16": {"class_type": "SaveImage", "inputs": {"images": ["15", 0], "filename_prefix": "analogist"}},
    }


def test_api_key_stays_out_of_saved_images_history_and_logs(tmp_path, sd15_checkpoint):
    key = "sk-test-" + secrets.token_urlsafe(30)
    chat = ChatServer().start()
    chat.default_text = VLM_ANSWER
    workspace = make_workspace(tmp_path / "comfyui", models={"checkpoints": [sd15_checkpoint]})
    for seed, name in enumerate(("a.png", "a_prime.png", "b.png")):
        save_pattern(workspace / "input" / name, 96, 80, seed=seed)
    server = ComfyServer(workspace, env={KEY_ENV: key}).start()
    try:
        result = server.run(analogist_vlm_prompt(chat.base_url))
        assert result.ok, result.error_text() + "\n" + server.log_tail()
        history = json.dumps(server.history())
        log = server.log_text()
        saved = [workspace / "output" / img["subfolder"] / img["filename"] for img in result.images("16")]
    finally:
        server.stop()
        chat.close()

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
