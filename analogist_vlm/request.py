"""What is asked: the instruction, the image as PNG, and the request's cache key."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import VLMError
from .urls import normalize_base_url

log = logging.getLogger("analogist.vlm")

DEFAULT_MODEL = "gpt-4o"
MAX_PROMPTS = 10
MAX_WORDS = 75  # CLIP reads 77 tokens; longer prompts are cut by the text encoder anyway
# Vision models look at far less: OpenAI scales an image to fit 2048 x 2048 (then 768 on
# the short side), Qwen-VL and LLaVA to less. Larger grids cost upload time and memory
# for nothing, and some servers reject them; they are downscaled to this longest side.
MAX_IMAGE_SIDE = 2048
CACHE_FORMAT = 1

# The paper's request (Analogist, textual_prompting.py): a lead-in naming the task, then
# one sentence asking for the prompt(s). ``{request}`` renders that sentence for the
# chosen counts, word for word the paper's for 1 prompt and for 3.
PAPER_LEAD_IN = (
    "Please help me with the image analogy task: take an image A and its transformation A', "
    "and provide any image B to produce an output B' that is analogous to A'. "
    "Or, more succinctly: A : A' :: B : B'."
)
DEFAULT_INSTRUCTION = PAPER_LEAD_IN + " {request}"


def lead_in_for_pairs(pairs: int, by_column: bool = False) -> str:
    """The paper's lead-in for a grid of ``pairs`` example pairs (the paper's own for one).

    Several pairs are named as Mark and Arrow labels them (A1, A1', A2, ...) and said to
    show one transformation, so the model describes what they have in common.
    """
    if pairs <= 1:
        return PAPER_LEAD_IN
    names = [f"A{k}" for k in range(1, pairs + 1)]
    primes = [f"{name}'" for name in names]
    chain = " :: ".join(f"{a} : {ap}" for a, ap in zip(names, primes, strict=True))
    return (
        f"Please help me with the image analogy task: take the images {_listed(names)} and "
        f"their transformations {_listed(primes)} (one pair per {'column' if by_column else 'row'}, "
        "all showing the same transformation), and provide any image B to produce an output "
        f"B' that is analogous to them. Or, more succinctly: {chain} :: B : B'."
    )


def instruction_for_pairs(template: str, pairs: int, by_column: bool = False) -> str:
    """``template`` with the paper's lead-in rewritten for ``pairs`` example pairs; an
    instruction the user wrote without that lead-in is left as typed."""
    if pairs <= 1 or PAPER_LEAD_IN not in template:
        return template
    return template.replace(PAPER_LEAD_IN, lead_in_for_pairs(pairs, by_column))


def _listed(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " and " + items[-1]


PLACEHOLDERS = ("{request}", "{num_prompts}", "{max_words}")
_NUMBER_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
)


def request_sentence(num_prompts: int, max_words: int) -> str:
    """The paper's closing request for ``num_prompts`` prompts of at most ``max_words``."""
    if num_prompts == 1:
        return (
            f"You should give me the most possible text prompt of image B' "
            f"with no more than {max_words} words."
        )
    count = _NUMBER_WORDS[num_prompts] if num_prompts < len(_NUMBER_WORDS) else str(num_prompts)
    example = ", ".join(f"prompt{i}" for i in range(1, num_prompts + 1))
    return (
        f"You should give me {count} most possible text prompts of image B', each prompt "
        f"should contain no more than {max_words} words. Please separate the prompts with "
        f"comma and format your answer as follows: {example}"
    )


def render_instruction(template: str, num_prompts: int, max_words: int) -> str:
    """Fill ``{request}``, ``{num_prompts}`` and ``{max_words}``; other braces stay as typed.

    Plain replacement rather than ``str.format`` so a user's instruction may contain other
    braces (a JSON example, say) without breaking.
    """
    text = template.replace("{request}", request_sentence(num_prompts, max_words))
    text = text.replace("{num_prompts}", str(num_prompts)).replace("{max_words}", str(max_words))
    return text.strip()


def fit_image(pixels: np.ndarray, max_side: int = MAX_IMAGE_SIDE) -> np.ndarray:
    """``pixels`` (``[H, W, C]`` uint8) downscaled so the longest side is at most ``max_side``.

    Smaller images come back unchanged (same array). Lanczos keeps the labels legible.
    """
    height, width = pixels.shape[:2]
    if max(height, width) <= max_side:
        return pixels
    from PIL import Image

    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    log.warning(
        "[Analogist] the grid is %dx%d; sending it downscaled to %dx%d (vision models look "
        "at no more than about %d px a side)",
        width,
        height,
        size[0],
        size[1],
        max_side,
    )
    channels = pixels.shape[2]
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    out = np.asarray(image.resize(size, Image.Resampling.LANCZOS))
    return out[:, :, None] if channels == 1 else out


def encode_png(pixels: np.ndarray) -> bytes:
    """PNG bytes of an ``[H, W, C]`` uint8 array (C = 1, 3 or 4), with no metadata."""
    from PIL import Image

    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise VLMError(
            f"the image must be [height, width, 1|3|4] uint8, got {pixels.dtype} {tuple(pixels.shape)}"
        )
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[pixels.shape[2]]
    image = Image.fromarray(pixels[:, :, 0] if mode == "L" else pixels, mode=mode)
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=6)
    return out.getvalue()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class VLMRequest:
    """One question to the model. ``instruction`` is already rendered."""

    image_png: bytes = field(repr=False)
    model: str
    instruction: str
    num_prompts: int = 1
    max_words: int = 5
    base_url: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise VLMError("model is empty: name a vision-capable model, e.g. gpt-4o")
        if not self.instruction.strip():
            raise VLMError("instruction is empty: the model needs to be told what to describe")
        if not 1 <= self.num_prompts <= MAX_PROMPTS:
            raise VLMError(f"num_prompts must be 1..{MAX_PROMPTS}, got {self.num_prompts}")
        if not 1 <= self.max_words <= MAX_WORDS:
            raise VLMError(f"max_words must be 1..{MAX_WORDS}, got {self.max_words}")
        normalize_base_url(self.base_url)

    @property
    def url(self) -> str:
        return normalize_base_url(self.base_url)

    def cache_key(self) -> str:
        return cache_key(
            image_sha256=hashlib.sha256(self.image_png).hexdigest(),
            model=self.model,
            instruction=self.instruction,
            num_prompts=self.num_prompts,
            max_words=self.max_words,
            base_url=self.base_url,
            seed=self.seed,
        )

    def messages(self) -> list[dict[str, Any]]:
        # Text then image, as in the paper's request.
        return [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": self.instruction},
                    {"type": "image_url", "image_url": {"url": png_data_url(self.image_png)}},
                ],
            }
        ]


def cache_key(
    *,
    image_sha256: str | None,
    model: str,
    instruction: str,
    num_prompts: int,
    max_words: int,
    base_url: str,
    seed: int,
) -> str:
    """sha256 over everything that changes the answer; the API key is not part of it."""
    try:
        url = normalize_base_url(base_url)
    except VLMError:
        url = (base_url or "").strip()
    payload = {
        "format": CACHE_FORMAT,
        "image_sha256": image_sha256,
        "model": model.strip(),
        "instruction": instruction,
        "num_prompts": int(num_prompts),
        "max_words": int(max_words),
        "base_url": url,
        "seed": int(seed),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()
