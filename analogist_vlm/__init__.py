"""The vision-language client behind the GPT-4V Prompt node: plain Python, no ComfyUI.

* :mod:`.urls`    where a request goes; ``base_url`` checked, credentials refused
* :mod:`.keys`    which key goes to which server: the user's bindings, never the workflow's
* :mod:`.request` what is asked: instruction, image (PNG, size-capped), cache key
* :mod:`.answers` what came back: the answer checked and cut into clean prompts
* :mod:`.clip_text` the prompts as literal text for the text encoder (no weights, no
  embeddings, no control characters)
* :mod:`.cache`   the on-disk answer cache
* :mod:`.client`  the call itself, through the ``openai`` package (imported lazily)
* :mod:`.transport` the limits on that call: deadline per attempt, answer size, Cancel
"""

from .answers import answer_text, clean_prompt, limit_words, parse_prompts
from .cache import AnswerCache
from .client import MAX_RETRIES, VLMClient, VLMResult, import_openai, openai_problem
from .clip_text import clip_literal, plain_text
from .errors import VLMError, excerpt, redact
from .keys import (
    BINDINGS_ENV,
    BINDINGS_FILE,
    DEFAULT_KEY_ENV,
    ApiKey,
    Binding,
    bindings_path,
    check_env_name,
    find_api_key,
    load_bindings,
    parse_bindings,
    read_key_file,
    unbound_hint,
    where_to_bind,
)
from .request import (
    CACHE_FORMAT,
    DEFAULT_INSTRUCTION,
    DEFAULT_MODEL,
    MAX_IMAGE_SIDE,
    MAX_PROMPTS,
    MAX_WORDS,
    PAPER_LEAD_IN,
    PLACEHOLDERS,
    VLMRequest,
    cache_key,
    encode_png,
    fit_image,
    instruction_for_pairs,
    lead_in_for_pairs,
    png_data_url,
    render_instruction,
    request_sentence,
)
from .transport import MAX_ANSWER_BYTES, MAX_PAUSE
from .urls import (
    OPENAI_BASE_URL,
    OPENAI_HOST,
    Server,
    display_url,
    is_openai_url,
    normalize_base_url,
    server_of,
)

__all__ = [
    "answer_text",
    "clean_prompt",
    "limit_words",
    "parse_prompts",
    "AnswerCache",
    "clip_literal",
    "plain_text",
    "MAX_RETRIES",
    "VLMClient",
    "VLMResult",
    "import_openai",
    "openai_problem",
    "VLMError",
    "excerpt",
    "redact",
    "BINDINGS_ENV",
    "BINDINGS_FILE",
    "DEFAULT_KEY_ENV",
    "ApiKey",
    "Binding",
    "bindings_path",
    "check_env_name",
    "find_api_key",
    "load_bindings",
    "parse_bindings",
    "read_key_file",
    "unbound_hint",
    "where_to_bind",
    "CACHE_FORMAT",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_MODEL",
    "MAX_IMAGE_SIDE",
    "MAX_PROMPTS",
    "MAX_WORDS",
    "PAPER_LEAD_IN",
    "PLACEHOLDERS",
    "VLMRequest",
    "cache_key",
    "encode_png",
    "fit_image",
    "png_data_url",
    "instruction_for_pairs",
    "lead_in_for_pairs",
    "render_instruction",
    "request_sentence",
    "MAX_ANSWER_BYTES",
    "MAX_PAUSE",
    "OPENAI_BASE_URL",
    "OPENAI_HOST",
    "Server",
    "display_url",
    "is_openai_url",
    "normalize_base_url",
    "server_of",
]
