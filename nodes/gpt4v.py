"""GPT4VPrompt: the B' text prompt from a vision-language model (ComfyUI glue).

The request, cache, retries, key lookup and answer cleaning live in ``vlm_client`` (no
ComfyUI import); this module turns ComfyUI inputs into a :class:`VLMRequest` and the
answer into outputs.

The ``openai`` package is optional: when it is missing or fails to import, the node still
registers, its display name and description say it is disabled and why, one line is
logged, and running it raises an error telling the user to ``pip install openai``.

Secrets: no input holds the API key. It is read at run time from the environment
variable named by ``api_key_env`` or from ``<user dir>/__analogist/<that name>.txt``, so it
never reaches the workflow, image metadata or history.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from pathlib import Path
from typing import Any

import numpy as np

from . import vlm_client as vlm

log = logging.getLogger("analogist.gpt4v")

NODE_ID = "AnalogistGPT4VPrompt"
DISPLAY_NAME = "Analogist GPT-4V Prompt"
# Where key file and cache live, under ComfyUI's user directory. The "__" prefix makes it
# a ComfyUI "system user" folder, which the server never serves over HTTP.
USER_SUBDIR = "__analogist"
CACHE_SUBDIR = "vlm_cache"
# How stubborn the node is with a busy server; tests swap in a fast policy.
RETRY_POLICY = vlm.RetryPolicy(retries=3, backoff_base=1.0, backoff_max=20.0)
SEED_MAX = 2**31 - 1  # OpenAI-compatible servers disagree above int32

OPENAI_PROBLEM = vlm.openai_problem()
if OPENAI_PROBLEM is not None:
    log.warning(
        "[Analogist] the GPT-4V Prompt node is disabled: the openai package is not "
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
    """``<user dir>/__analogist``: the key file and the prompt cache."""
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
            "[Analogist] GPT-4V Prompt got a batch of %d grids; only the first is "
            "sent to the model",
            image.shape[0],
        )
    first = image[0]
    if hasattr(first, "detach"):
        first = first.detach().to("cpu").float().numpy()
    pixels = np.nan_to_num(np.asarray(first, dtype=np.float32), nan=0.0)
    return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


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
    "own resolution.\n\n"
    "API key: never a widget. It is read from the environment variable named in "
    "api_key_env (default OPENAI_API_KEY), else from the file "
    "ComfyUI/user/__analogist/<api_key_env lower-cased>.txt (e.g. openai_api_key.txt). "
    "The OpenAI key is only ever sent to api.openai.com. Local servers (Ollama, LM Studio, "
    "vLLM) need no key: set base_url, e.g. http://127.0.0.1:11434/v1.\n\n"
    "Answers are cached on disk (ComfyUI/user/__analogist/vlm_cache) by image, model, "
    "instruction, counts, base_url and seed: re-queuing or restarting costs no API call. "
    "Change the seed to ask again."
)


class AnalogistGPT4VPrompt:
    DESCRIPTION = DESCRIPTION
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
                        "sent, at its own resolution, as PNG."
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
                        "there.",
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
                        "default": vlm.DEFAULT_KEY_ENV,
                        "dynamicPrompts": False,
                        "tooltip": "NAME of the environment variable holding "
                        "the API key (never the key: widgets are saved in "
                        "workflows and images). Unset variable: the key is "
                        "read from ComfyUI/user/__analogist/<name in lower "
                        "case>.txt.",
                    },
                ),
                "timeout": (
                    "FLOAT",
                    {
                        "default": 60.0,
                        "min": 1.0,
                        "max": 600.0,
                        "step": 1.0,
                        "tooltip": "Seconds to wait for one answer. Timeouts, "
                        "rate limits (429) and server errors (5xx) are retried "
                        f"{RETRY_POLICY.retries} times with growing pauses.",
                    },
                ),
            },
        }

    @classmethod
    def IS_CHANGED(
        cls,
        image: Any = None,
        model: str = vlm.DEFAULT_MODEL,
        instruction: str = vlm.DEFAULT_INSTRUCTION,
        num_prompts: int = 1,
        max_words: int = 5,
        base_url: str = "",
        seed: int = 0,
        **_ignored: Any,
    ) -> str:
        """The answer cache's key, so ComfyUI re-runs the node exactly when it would ask anew.

        ComfyUI passes no linked inputs here on current versions; the image then enters
        through the upstream node's own change detection. Never raises: a bad input
        surfaces when the node runs.
        """
        try:
            image_sha = None
            if image is not None:
                image_sha = hashlib.sha256(vlm.encode_png(image_to_uint8(image))).hexdigest()
            return vlm.cache_key(
                image_sha256=image_sha,
                model=str(model),
                instruction=vlm.render_instruction(
                    str(instruction), int(num_prompts), int(max_words)
                ),
                num_prompts=int(num_prompts),
                max_words=int(max_words),
                base_url=str(base_url),
                seed=int(seed),
            )
        except Exception as exc:
            return f"invalid input ({type(exc).__name__})"

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
        api_key_env: str = vlm.DEFAULT_KEY_ENV,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        if OPENAI_PROBLEM is not None:
            raise vlm.VLMError(
                f"{DISPLAY_NAME} is disabled: the openai package is not available "
                f"({OPENAI_PROBLEM}). Install it into ComfyUI's Python environment with: "
                f"pip install openai — then restart ComfyUI."
            )
        vlm.check_env_name(api_key_env)  # before anything else: refuse a pasted key early
        request = vlm.VLMRequest(
            image_png=vlm.encode_png(image_to_uint8(image)),
            model=model.strip(),
            instruction=vlm.render_instruction(instruction, num_prompts, max_words),
            num_prompts=int(num_prompts),
            max_words=int(max_words),
            base_url=base_url.strip(),
            seed=int(seed),
        )
        folder = analogist_directory()
        if folder is None:
            log.warning(
                "[Analogist] ComfyUI's user directory was not found: no prompt cache, no key file"
            )
        client = vlm.VLMClient(
            folder / CACHE_SUBDIR if folder else None,
            timeout=max(0.1, float(timeout)),
            retry=RETRY_POLICY,
        )
        result = client.ask(request, lambda: vlm.find_api_key(api_key_env, folder, base_url))
        prompts = [p + suffix for p in result.prompts]
        return {"ui": {"text": prompts}, "result": (prompts[0], prompts)}


def _disabled(text: str) -> str:
    return text if OPENAI_PROBLEM is None else f"{text} (disabled: openai missing)"


if OPENAI_PROBLEM is not None:
    AnalogistGPT4VPrompt.DESCRIPTION = (
        f"DISABLED: the openai package is not available ({OPENAI_PROBLEM}). Run "
        f"`pip install openai` in ComfyUI's Python environment and restart.\n\n" + DESCRIPTION
    )

NODE_CLASS_MAPPINGS = {NODE_ID: AnalogistGPT4VPrompt}
NODE_DISPLAY_NAME_MAPPINGS = {NODE_ID: _disabled(DISPLAY_NAME)}
