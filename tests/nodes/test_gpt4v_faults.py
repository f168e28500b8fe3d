"""Issue 23, the GPT-4V Prompt node: what a server says is text, a bad timeout is refused,
Cancel stops the wait, and a broken image is not sent.

The prompt syntax test tokenizes with ComfyUI's own tokenizer (``comfy.sd1_clip``,
``SDTokenizer.tokenize_with_weights``) and a real textual-inversion file in a real
embeddings folder: the raw answer would weigh ``cat`` by 1e38 and load the embedding,
the node's output is read literally.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import support.chat_server as helper
import torch
from comfyui_analogist import analogist_vlm as vlm
from comfyui_analogist.nodes import vlm as gpt4v

HOSTILE = "(cat:1e38) embedding:x [dog] \x1b[2J\x00smile\u202eevil\u200b end"


@pytest.fixture
def server():
    srv = helper.ChatServer().start()
    yield srv
    srv.close()


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(gpt4v, "user_directory", lambda: tmp_path / "user")
    monkeypatch.setattr(gpt4v, "MAX_RETRIES", 1)
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # the openai client's backoff
    monkeypatch.delenv(vlm.BINDINGS_ENV, raising=False)
    return tmp_path / "user"


def grid(seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (1, 40, 56, 3), dtype=np.uint8)
    return torch.from_numpy(pixels.astype(np.float32) / 255.0)


def run(server, **changes):
    inputs = dict(
        image=grid(),
        model="gpt-4o",
        instruction=vlm.DEFAULT_INSTRUCTION,
        num_prompts=1,
        max_words=20,
        suffix="",
        base_url=server.base_url,
        seed=0,
        api_key_env=vlm.DEFAULT_KEY_ENV,
        timeout=5.0,
    )
    inputs.update(changes)
    return gpt4v.AnalogistGPT4VPrompt().ask(**inputs)


@pytest.fixture
def tokenizer(tmp_path):
    """ComfyUI's SD1 tokenizer with a real embeddings folder holding ``x.safetensors``."""
    import safetensors.torch
    from comfy import sd1_clip

    folder = tmp_path / "embeddings"
    folder.mkdir()
    safetensors.torch.save_file({"clip_l": torch.randn(1, 768)}, str(folder / "x.safetensors"))
    return sd1_clip.SDTokenizer(embedding_directory=str(folder))


def weights_and_embeddings(tokens):
    flat = [t for batch in tokens for t in batch]
    weights = {float(t[1]) for t in flat}
    embeds = [t for t in flat if isinstance(t[0], torch.Tensor)]
    return weights, embeds


def test_the_answer_reaches_clip_as_text_not_syntax(server, user_dir, tokenizer):
    # The raw answer, tokenized as it used to be passed on: a 1e38 weight and the embedding.
    raw_weights, raw_embeds = weights_and_embeddings(tokenizer.tokenize_with_weights(HOSTILE))
    assert 1e38 in raw_weights and raw_embeds

    server.default_text = HOSTILE
    out = run(server)
    prompt, prompts = out["result"]
    assert prompts == [prompt] and out["ui"]["text"] == [prompt]
    for char in ("\x1b", "\x00", "\u202e", "\u200b"):
        assert char not in prompt

    weights, embeds = weights_and_embeddings(tokenizer.tokenize_with_weights(prompt))
    assert weights == {1.0} and not embeds
    # Literally the words, parentheses included: the CLIP tokenizer's own tokens of the
    # plain text, with no embedding and no weight.
    literal = "(cat:1e38) embedding:x (dog) smileevil end"
    expected = tokenizer.tokenizer(literal)["input_ids"]
    got = [t[0] for b in tokenizer.tokenize_with_weights(prompt) for t in b]
    start, end = expected[0], expected[-1]
    assert [t for t in got if t not in (start, end)] == expected[1:-1]


def test_the_users_suffix_keeps_its_own_weights(server, user_dir, tokenizer):
    server.default_text = "(cat:9)"
    prompt, _ = run(server, suffix=", (masterpiece:1.2)")["result"]
    weights, _ = weights_and_embeddings(tokenizer.tokenize_with_weights(prompt))
    assert max(weights) == pytest.approx(1.2) and min(weights) == 1.0
    assert len(weights) == 2  # the server's "(cat:9)" weighs nothing


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 0.0, "soon"])
def test_a_timeout_that_is_not_a_number_of_seconds_is_refused_before_asking(server, user_dir, bad):
    with pytest.raises(vlm.VLMError, match=r"timeout must be a number of seconds from 1 to 600"):
        run(server, timeout=bad)
    assert server.count == 0


def interrupt_exception(mm):
    """ComfyUI's interrupt exception: in model_management (0.30) or comfy.interruption (0.0.1)."""
    found = getattr(mm, "InterruptProcessingException", None)
    if found is None:
        from comfy import interruption

        found = interruption.InterruptProcessingException
    return found


def test_comfyui_cancel_stops_the_node_waiting_for_a_server(server, user_dir):
    import comfy.model_management as mm

    server.script(helper.Reply(delay=60))
    mm.interrupt_current_processing(False)
    timer = threading.Timer(0.5, mm.interrupt_current_processing, args=(True,))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(interrupt_exception(mm)):
            run(server, timeout=60.0)
    finally:
        timer.cancel()
        mm.interrupt_current_processing(False)
    assert time.monotonic() - start < 2.0


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda g: g * float("nan"), "image has .* NaN or infinite"),
        (lambda g: g * 255.0, "image has pixel values up to"),
        (lambda g: g * 2 - 1, "image has pixel values down to"),
    ],
)
def test_a_broken_image_is_refused_not_sent(server, user_dir, spoil, message):
    with pytest.raises(ValueError, match=message):
        run(server, image=spoil(grid()))
    assert server.count == 0
