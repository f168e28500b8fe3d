"""Prompts to token ids, and the CLIP text encoder's forward with a trainable ``<R>`` row.

The tokenizer is any Hugging Face ``CLIPTokenizer`` (ComfyUI's own SD1 one works: its
``model_max_length`` of 8192 does not matter, the 77-token layout is built here). The
placeholder ``<R>`` gets the id one past the vocabulary (49408 for CLIP), as the official
code's added token does; it never reaches the embedding table, ``r`` stands in for its row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .recipe import PLACEHOLDER, RELATION_WORDS, STOP_WORDS

CONTEXT_LENGTH = 77


class PromptTokens:
    """Token ids for ReVersion's prompts with one tokenizer.

    ``bos``/``eos`` are the tokenizer's; padding is with EOS; ``placeholder_id`` is
    ``vocab_size`` (the row the official code appends for ``<R>``).
    """

    def __init__(self, tokenizer, vocab_size: int):
        self.tokenizer = tokenizer
        self.bos = int(tokenizer.bos_token_id)
        self.eos = int(tokenizer.eos_token_id)
        self.placeholder_id = int(vocab_size)
        self._stop_ids: frozenset[int] | None = None

    def words(self, text: str) -> list[int]:
        """Ids of ``text`` without BOS/EOS."""
        if not text.strip():
            return []
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def word_id(self, word: str) -> int:
        """The single id of ``word`` (the initializer token); ValueError when it is several."""
        ids = self.words(word)
        if len(ids) != 1:
            raise ValueError(
                f"initializer word {word!r} is {len(ids)} tokens for this tokenizer; "
                "give a word that is one token (the paper uses 'and')"
            )
        return ids[0]

    def prompt(self, template: str) -> list[int]:
        """``template`` with ``{}`` as ``<R>``: BOS, tokens, EOS, padded with EOS to 77.

        Text on each side of ``{}`` is tokenised on its own, as a tokenizer does around an
        added token. Too long prompts are cut to 75 tokens, as the official truncation does.
        """
        parts = template.split("{}")
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i:
                ids.append(self.placeholder_id)
            ids.extend(self.words(part))
        ids = [self.bos] + ids[: CONTEXT_LENGTH - 2] + [self.eos]
        return ids + [self.eos] * (CONTEXT_LENGTH - len(ids))

    def positives(self, words: Sequence[str]) -> list[int]:
        """The positive words as one padded 77-token row (``" ".join(words)``, as recorded)."""
        return self.prompt(" ".join(words).replace("{}", ""))

    @property
    def stop_ids(self) -> frozenset[int]:
        """Ids never used as negatives: stop words, prepositions, BOS and EOS."""
        if self._stop_ids is None:
            ids = self.words(" ".join(STOP_WORDS + RELATION_WORDS))
            self._stop_ids = frozenset(ids) | {self.bos, self.eos}
        return self._stop_ids

    def negative_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Every id of every prompt that is not a stop word, preposition, BOS/EOS or ``<R>``.

        Row-major order, duplicates kept.
        """
        excluded = self.stop_ids | {self.placeholder_id}
        flat = [int(i) for i in input_ids.reshape(-1).tolist()]
        return torch.tensor([i for i in flat if i not in excluded], dtype=torch.int64)

    def positive_ids_used(self, positive_ids: torch.Tensor) -> torch.Tensor:
        """Every id of the positive rows minus BOS/EOS (padding), duplicates kept."""
        flat = [int(i) for i in positive_ids.reshape(-1).tolist()]
        return torch.tensor([i for i in flat if i not in (self.bos, self.eos)], dtype=torch.int64)


def check_templates(templates: Iterable[str], where: str) -> list[str]:
    """Each template must hold ``{}`` exactly once; ValueError naming ``where`` otherwise."""
    out = []
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"{where}: caption template {template!r} must contain '{{}}' exactly once, where "
                f"the relation goes, e.g. 'cat {{}} stone' (it becomes 'cat {PLACEHOLDER} stone')"
            )
        out.append(template)
    if not out:
        raise ValueError(f"{where}: no caption templates; give at least one, e.g. 'cat {{}} stone'")
    return out


def token_embeddings(
    table: torch.Tensor, input_ids: torch.Tensor, r: torch.Tensor, placeholder_id: int
):
    """Rows of ``table`` for ``input_ids``; ``r`` for the placeholder (the only path to grad)."""
    is_r = input_ids == placeholder_id
    safe = torch.where(is_r, torch.zeros_like(input_ids), input_ids)
    rows = torch.nn.functional.embedding(safe, table.detach())
    r = r.to(rows.dtype)
    return torch.where(is_r.unsqueeze(-1), r.expand_as(rows), rows)


def _causal_attention(q, k, v, heads, mask=None, **_):
    """Plain scaled-dot-product attention over (B, N, heads*d), additive ``mask``."""
    b, n, c = q.shape
    d = c // heads
    q, k, v = (x.reshape(b, -1, heads, d).transpose(1, 2) for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, c)


def _compute_dtype(text_model) -> torch.dtype:
    """float32 where ComfyUI's ops cast weights to the input (as its own CLIP forward runs
    them), else the weights' dtype."""
    probe = text_model.encoder.layers[0].self_attn.q_proj
    if getattr(probe, "comfy_cast_weights", False):
        return torch.float32
    return probe.weight.dtype


def encode(
    text_model, input_ids: torch.Tensor, r: torch.Tensor, placeholder_id: int
) -> torch.Tensor:
    """The CLIP text transformer's last hidden state (after its final LayerNorm).

    ``text_model`` is ComfyUI's ``CLIPTextModel_`` (``clip.cond_stage_model.clip_l
    .transformer.text_model``): its own embedding tables, layers and final norm, called here
    with out-of-place residual adds. ComfyUI's forward adds in place (``x += ...``), which
    autograd cannot differentiate through; the arithmetic is otherwise the same.
    """
    embeddings = text_model.embeddings
    table = embeddings.token_embedding.weight
    dtype = _compute_dtype(text_model)
    device = table.device
    input_ids = input_ids.to(device)
    x = token_embeddings(table, input_ids, r.to(device), placeholder_id).to(dtype)
    position = embeddings.position_embedding.weight[: input_ids.shape[1]].detach().to(dtype)
    x = x + position
    n = x.shape[1]
    mask = torch.full((n, n), -torch.finfo(dtype).max, dtype=dtype, device=device).triu(1)
    for layer in text_model.encoder.layers:
        x = x + layer.self_attn(layer.layer_norm1(x), mask, _causal_attention)
        x = x + layer.mlp(layer.layer_norm2(x))
    return text_model.final_layer_norm(x)
