"""The GPT-4V Prompt's text handling: instruction rendering, answer cleaning and parsing.

Pure functions of the ``analogist_vlm`` package; no server, no ComfyUI.
"""

from __future__ import annotations

import logging

import pytest
from comfyui_analogist import analogist_vlm as vlm

PAPER_ONE = (
    "Please help me with the image analogy task: take an image A and its transformation A', "
    "and provide any image B to produce an output B' that is analogous to A'. Or, more "
    "succinctly: A : A' :: B : B'. You should give me the most possible text prompt of image "
    "B' with no more than 5 words."
)
PAPER_THREE = (
    "Please help me with the image analogy task: take an image A and its transformation A', "
    "and provide any image B to produce an output B' that is analogous to A'. Or, more "
    "succinctly: A : A' :: B : B'. You should give me three most possible text prompts of "
    "image B', each prompt should contain no more than 5 words. Please separate the prompts "
    "with comma and format your answer as follows: prompt1, prompt2, prompt3"
)


def test_default_instruction_renders_the_papers_wording_for_one_and_three_prompts():
    assert vlm.render_instruction(vlm.DEFAULT_INSTRUCTION, 1, 5) == PAPER_ONE
    assert vlm.render_instruction(vlm.DEFAULT_INSTRUCTION, 3, 5) == PAPER_THREE


def test_placeholders_fill_numbers_and_leave_other_braces_alone():
    text = vlm.render_instruction('Give {num_prompts} x {max_words} as {"a": 1} {other}', 2, 7)
    assert text == 'Give 2 x 7 as {"a": 1} {other}'


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ('"smiling woman"', "smiling woman"),
        ("“smiling woman.”", "smiling woman"),
        ("'smiling woman'", "smiling woman"),
        ("1. smiling woman", "smiling woman"),
        ("2) smiling woman!", "smiling woman"),
        ("(3) smiling woman", "smiling woman"),
        ("- smiling woman", "smiling woman"),
        ("* smiling woman", "smiling woman"),
        ("• smiling woman;", "smiling woman"),
        ("**smiling woman**", "smiling woman"),
        ("Prompt: smiling woman.", "smiling woman"),
        ("B': smiling woman", "smiling woman"),
        ('1. "smiling woman".', "smiling woman"),
        ("  smiling   woman  ", "smiling woman"),
        ("3D render of a cat", "3D render of a cat"),
        ("1990s photo of a car", "1990s photo of a car"),
        ("3.5 inch floppy disk", "3.5 inch floppy disk"),
        ("dogs' toys", "dogs' toys"),
    ],
)
def test_clean_prompt_strips_quotes_numbering_bullets_and_trailing_punctuation(raw, clean):
    assert vlm.clean_prompt(raw) == clean


def test_one_prompt_keeps_commas_and_takes_the_line_after_a_heading():
    assert vlm.parse_prompts("red car, vintage style.", 1, 5) == ["red car, vintage style"]
    assert vlm.parse_prompts('Here is the prompt:\n"red car"', 1, 5) == ["red car"]


@pytest.mark.parametrize(
    "answer",
    [
        "red car, blue bike, green bus",
        "1. red car\n2. blue bike\n3. green bus",
        "- red car\n- blue bike\n- green bus\n",
        'Here are three prompts:\n1) "red car"\n2) "blue bike"\n3) "green bus"',
        "red car; blue bike; green bus.",
        "<think>they want vehicles</think>red car, blue bike, green bus",
    ],
)
def test_three_prompts_parse_from_comma_lists_numbered_lines_and_bullets(answer):
    assert vlm.parse_prompts(answer, 3, 5) == ["red car", "blue bike", "green bus"]


def test_more_prompts_than_asked_keeps_the_first_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
        assert vlm.parse_prompts("a cat, a dog, a cow, a hen", 3, 5) == ["a cat", "a dog", "a cow"]
    assert "asked for 3 prompts, the model gave 4" in caplog.text


def test_fewer_prompts_than_asked_is_an_error_that_says_what_came_back():
    with pytest.raises(vlm.VLMError, match=r"asked for 3 prompts, the model gave 2.*'a cat'"):
        vlm.parse_prompts("a cat, a dog", 3, 5)


def test_answer_longer_than_max_words_is_cut_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="analogist.vlm"):
        prompts = vlm.parse_prompts(
            "a smiling woman with exaggerated cartoon features, drawn", 1, 5
        )
    assert prompts == ["a smiling woman with exaggerated"]
    assert "more than max_words=5" in caplog.text


@pytest.mark.parametrize("answer", ["", "   \n ", '""', "<think>hmm</think>", "1.", "- ..."])
def test_empty_answers_are_errors_never_empty_prompts(answer):
    with pytest.raises(vlm.VLMError, match="empty answer|no usable prompt"):
        vlm.parse_prompts(answer, 1, 5)


@pytest.mark.parametrize(
    "answer",
    [
        "I'm sorry, but I can't help with that.",
        "Sorry, I cannot identify people.",
        "I cannot assist with this request.",
        "As an AI, I can't see images.",
    ],
)
def test_refusals_in_the_text_are_errors(answer):
    with pytest.raises(vlm.VLMError, match="refused"):
        vlm.parse_prompts(answer, 1, 5)


def test_answer_text_rejects_refusal_field_content_filter_and_malformed_shapes():
    good = {"choices": [{"message": {"content": "red car"}, "finish_reason": "stop"}]}
    assert vlm.answer_text(good) == "red car"
    with pytest.raises(vlm.VLMError, match="refused"):
        vlm.answer_text({"choices": [{"message": {"content": None, "refusal": "No."}}]})
    with pytest.raises(vlm.VLMError, match="content filter"):
        vlm.answer_text(
            {"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}
        )
    for bad in (
        {},
        {"choices": []},
        "text",
        {"choices": "x"},
        {"choices": [{"message": None}]},
        {"choices": [{"message": {"content": 5}}]},
    ):
        with pytest.raises(vlm.VLMError):
            vlm.answer_text(bad)


def test_cache_key_covers_every_answer_changing_field_and_not_the_key():
    base = dict(
        image_sha256="0" * 64,
        model="gpt-4o",
        instruction="i",
        num_prompts=1,
        max_words=5,
        base_url="",
        seed=0,
    )
    key = vlm.cache_key(**base)
    assert vlm.cache_key(**base) == key
    for field, value in [
        ("image_sha256", "1" * 64),
        ("model", "gpt-4.1"),
        ("instruction", "j"),
        ("num_prompts", 3),
        ("max_words", 6),
        ("base_url", "http://127.0.0.1:11434/v1"),
        ("seed", 1),
    ]:
        assert vlm.cache_key(**{**base, field: value}) != key, field
    # Spelling OpenAI's URL out, or a trailing slash, is the same server.
    assert vlm.cache_key(**{**base, "base_url": "https://api.openai.com/v1/"}) == key


def test_urls_in_messages_never_show_credentials():
    assert vlm.display_url("http://user:pw@host:8080/v1?key=s#x") == "http://host:8080/v1"
    with pytest.raises(vlm.VLMError) as info:
        vlm.normalize_base_url("ftp://user:secretpw@host/v1")
    assert "secretpw" not in str(info.value)


def test_redact_removes_the_key_and_bearer_looking_tokens():
    text = "key sk-test-abcdefgh123 and Bearer abcdef123456 and mysecretvalue"
    out = vlm.redact(text, "mysecretvalue")
    assert "sk-test-abcdefgh123" not in out and "abcdef123456" not in out
    assert "mysecretvalue" not in out
