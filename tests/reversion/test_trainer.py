"""The training loop on the goldens' tiny model: saves, resume, interrupt, names, bad data."""

from __future__ import annotations

import json

import pytest
import safetensors.torch
import torch
from comfyui_analogist.analogist_reversion import embeddings
from comfyui_analogist.analogist_reversion.comfy_parts import vae_moments
from comfyui_analogist.analogist_reversion.data import (
    ExemplarError,
    exemplars_from_folder,
    exemplars_from_images,
)
from comfyui_analogist.analogist_reversion.recipe import Recipe
from comfyui_analogist.analogist_reversion.trainer import Trainer, TrainingError
from support import reversion as goldens

RECIPE = Recipe(
    max_steps=4, batch_size=2, gradient_accumulation=1, repeats=1, resolution=64, save_every=2
)


class Stop(Exception):
    pass


def make(tiny, tiny_parts, folder, name, recipe=RECIPE, **kw):
    exemplars = exemplars_from_folder(goldens.GOLDENS / "exemplars", recipe.resolution)
    return Trainer(
        tiny_parts, vae_moments(tiny.first_stage_model, torch.float32), tiny.latent_scale, exemplars,
        recipe, name, folder, torch.device("cpu"), **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def full_run(tiny, tiny_parts, tmp_path_factory):
    folder = tmp_path_factory.mktemp("embeddings")
    seen = []
    result = make(tiny, tiny_parts, folder, "rel", save_official_bin=True,
                  on_step=lambda s, t, loss: seen.append((s, t, loss))).run()  # fmt: skip
    return folder, result, seen


def test_a_run_saves_comfy_and_official_files_that_hold_the_trained_row(full_run, tiny_parts):
    folder, result, seen = full_run
    saved = safetensors.torch.load_file(str(folder / "rel.safetensors"))
    assert list(saved) == ["clip_l"] and saved["clip_l"].shape == (1, 32)
    assert torch.equal(saved["clip_l"][0], result.r)
    official = torch.load(result.official_bin, weights_only=True)
    assert list(official) == ["<R>"] and torch.equal(official["<R>"], result.r)
    assert official["<R>"].untyped_storage().nbytes() == 32 * 4  # a copy, not a view of the table
    initial = tiny_parts.token_table[tiny_parts.tokens.word_id("and")]
    assert not torch.allclose(result.r, initial)
    assert result.steps == 4 and len(result.losses) == 4
    assert [s for s, _, _ in seen] == [0, 1, 2, 3, 4] and all(t == 4 for _, t, _ in seen)
    assert (folder / "rel-training" / "rel-step000002.safetensors").is_file()
    assert not list(folder.rglob("*.partial"))


def test_interrupt_keeps_the_last_intermediate_and_no_final_file_then_resume_matches(
    full_run, tiny, tiny_parts, tmp_path
):
    _, reference, _ = full_run
    calls = {"n": 0}

    def interrupt_in_step_three():
        calls["n"] += 1
        if calls["n"] == 3:  # one micro-step per step: steps 1, 2 ran (saved at 2)
            raise Stop

    trainer = make(tiny, tiny_parts, tmp_path, "rel", check_interrupt=interrupt_in_step_three)
    with pytest.raises(Stop):
        trainer.run()
    assert not (tmp_path / "rel.safetensors").exists()
    intermediate = tmp_path / "rel-training" / "rel-step000002.safetensors"
    assert intermediate.is_file()
    assert not list(tmp_path.rglob("*.partial"))
    resumed = make(tiny, tiny_parts, tmp_path, "rel").run()
    # Not bit-exact: the CPU kernels may take another code path for another buffer
    # alignment, so even two uninterrupted runs in one process can differ in the last bit
    # (seen: 4e-9). A lost optimizer or RNG state moves <R> by about the learning rate per
    # step, thousands of times more than this bound.
    initial = tiny_parts.token_table[tiny_parts.tokens.word_id("and")]
    travelled = float((reference.r - initial).abs().max())
    assert float((resumed.r - reference.r).abs().max()) <= 1e-4 * travelled
    assert resumed.losses == pytest.approx(reference.losses, rel=1e-5)


def test_an_existing_embedding_is_never_overwritten(full_run, tiny, tiny_parts):
    folder, _, _ = full_run
    before = (folder / "rel.safetensors").read_bytes()
    with pytest.raises(embeddings.EmbeddingNameError, match="choose a new name"):
        make(tiny, tiny_parts, folder, "rel")
    assert (folder / "rel.safetensors").read_bytes() == before


def test_resume_with_other_settings_is_refused(tiny, tiny_parts, tmp_path):
    trainer = make(tiny, tiny_parts, tmp_path, "x", check_interrupt=lambda: None)
    trainer._init_state()
    trainer._save_state()
    other = Recipe(
        max_steps=5, batch_size=2, gradient_accumulation=1, repeats=1, resolution=64, save_every=2
    )
    with pytest.raises(TrainingError, match="other settings"):
        make(tiny, tiny_parts, tmp_path, "x", recipe=other).run()


@pytest.mark.parametrize("name", ["", "../evil", "a/b", ".hidden", "x" * 101])
def test_bad_names_are_refused(name):
    with pytest.raises(embeddings.EmbeddingNameError, match="not usable"):
        embeddings.check_name(name)


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(ExemplarError, match="holds no images"):
        exemplars_from_folder(tmp_path, 64)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(ExemplarError, match="no text.json"):
        exemplars_from_folder(tmp_path, 64)
    (tmp_path / "text.json").write_text(json.dumps({"a.png": ["cat stone"]}))
    with pytest.raises(ExemplarError, match="must contain '{}'"):
        exemplars_from_folder(tmp_path, 64)
    (tmp_path / "text.json").write_text(json.dumps({"b.png": ["cat {} stone"]}))
    with pytest.raises(ExemplarError, match="no caption templates for"):
        exemplars_from_folder(tmp_path, 64)


def test_image_batch_caption_errors():
    images = torch.rand(3, 16, 16, 3)
    with pytest.raises(ExemplarError, match="2 lines for 3 images"):
        exemplars_from_images(images, "cat {} stone\ndog {} wall", 64)
    with pytest.raises(ExemplarError, match="must contain"):
        exemplars_from_images(images, "cat stone", 64)
    with pytest.raises(ExemplarError, match="captions is empty"):
        exemplars_from_images(images, "  \n", 64)
    one = exemplars_from_images(images, "cat {} stone | a cat {} a stone", 64)
    assert [e.templates for e in one] == [("cat {} stone", "a cat {} a stone")] * 3
    assert one[0].pixels.shape == (3, 64, 64) and -1.0 <= float(one[0].pixels.min())


def test_recipe_defaults_are_the_papers():
    recipe = Recipe()
    assert (recipe.batch_size, recipe.gradient_accumulation, recipe.max_steps, recipe.seed) == (
        2,
        4,
        3000,
        2023,
    )
    assert recipe.learning_rate == pytest.approx(2e-3)
    assert (recipe.weight_decay, recipe.steer_weight, recipe.num_positives) == (1e-2, 0.01, 4)
    assert (recipe.scaled_cosine_alpha, recipe.temperature) == (0.5, 0.07)
