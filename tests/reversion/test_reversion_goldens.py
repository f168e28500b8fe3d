"""Replays the official ReVersion run (goldens) through the pack's loss and optimizer step.

Teacher forcing: the recorded x0, noise, timesteps and ids go in; losses, <R> gradients and
<R> after every AdamW step must match within the goldens README's tolerances.
"""

from __future__ import annotations

import torch
from comfyui_analogist.analogist_reversion import schedule
from comfyui_analogist.analogist_reversion.loss import relation_loss
from comfyui_analogist.analogist_reversion.recipe import Recipe
from comfyui_analogist.analogist_reversion.trainer import adamw
from support import reversion as goldens


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_rebuilt_weights_match_the_manifest_sha256():
    spec = goldens.manifest()
    states = goldens.rebuild_state_dicts(spec)
    for comp in spec["components"]:
        assert goldens.digest(states[comp["name"]]) == comp["sha256"], comp["name"]


def test_importance_distribution_matches_the_record_exactly(record):
    tensors, _ = record
    p = schedule.importance_distribution(0.5)
    assert p.dtype == torch.float64
    assert float((p - tensors["p_t"]).abs().max()) <= 1e-15


def test_prompt_ids_positives_and_negatives_match_the_record(tiny_parts, record):
    tensors, meta = record
    tokens = tiny_parts.tokens
    assert tokens.placeholder_id == meta["placeholder_token_id"]
    assert tokens.word_id(meta["initializer_token"]) == meta["initializer_token_id"]
    assert tokens.stop_ids == frozenset(meta["stop_ids"])
    for j, micro in enumerate(meta["micro_steps"]):
        ids = torch.tensor([tokens.prompt(t) for t in micro["templates"]])
        assert torch.equal(ids, tensors[f"micro{j}.input_ids"]), micro["prompts"]
        pos = torch.tensor([tokens.positives(w) for w in micro["positive_words"]])
        assert torch.equal(pos, tensors[f"micro{j}.positive_ids"]), micro["positive_words"]
        assert torch.equal(tokens.negative_ids(ids), tensors[f"micro{j}.negative_ids"])
        assert torch.equal(tokens.positive_ids_used(pos), tensors[f"micro{j}.positive_ids_used"])


def test_initial_r_is_the_initializer_row(tiny_parts, record):
    tensors, meta = record
    assert torch.equal(tiny_parts.token_table[meta["initializer_token_id"]], tensors["R_init"])


def test_teacher_forced_training_reproduces_losses_gradients_and_r(tiny_parts, record):
    tensors, meta = record
    accum = meta["gradient_accumulation_steps"]
    recipe = Recipe(batch_size=2, gradient_accumulation=accum, base_learning_rate=2.5e-4)
    assert recipe.learning_rate == meta["optimizer_steps"][0]["lr"]
    r = torch.nn.Parameter(tensors["R_init"].clone())
    optimizer = adamw(r, recipe)
    step = 0
    previous = torch.zeros_like(r)
    for j, micro in enumerate(meta["micro_steps"]):
        k = f"micro{j}"
        terms = relation_loss(
            tiny_parts, r, tensors[f"{k}.x0"], tensors[f"{k}.noise"], tensors[f"{k}.timesteps"],
            tensors[f"{k}.input_ids"], tensors[f"{k}.positive_ids"],
        )  # fmt: skip
        assert abs(float(terms.denoise.detach()) - float(tensors[f"{k}.denoise_loss"])) <= 1e-5, j
        assert abs(float(terms.steer.detach()) - float(tensors[f"{k}.steer_loss"])) <= 1e-5, j
        assert abs(float(terms.total.detach()) - float(tensors[f"{k}.loss"])) <= 1e-5, j
        assert abs(float(terms.total.detach()) - micro["loss"]) <= 1e-5, j
        (terms.total / accum).backward()
        grad = r.grad.detach().clone()
        assert _rel(grad - previous, tensors[f"{k}.grad_R"]) <= 1e-3, j
        assert _rel(grad, tensors[f"{k}.grad_R_accumulated"]) <= 1e-3, j
        previous = grad
        if j + 1 in meta["sync_after_micro_steps"]:
            assert _rel(grad, tensors[f"step{step}.grad_R"]) <= 1e-3, step
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            previous = torch.zeros_like(r)
            golden = tensors[f"step{step}.R"]
            assert float((r.detach() - golden).abs().max()) <= 1e-4 * float(golden.abs().max()), (
                step
            )
            step += 1
    assert step == len(meta["optimizer_steps"])
    final = tensors["R_final"]
    assert float((r.detach() - final).abs().max()) <= 1e-4 * float(final.abs().max())
    official = torch.load(goldens.GOLDENS / "learned_embeds.bin", weights_only=True)["<R>"]
    assert float((r.detach() - official).abs().max()) <= 1e-4 * float(official.abs().max())


def test_text_encoder_context_and_unet_prediction_match_the_record(tiny_parts, record):
    tensors, _ = record
    r = tensors["R_init"]
    with torch.no_grad():
        terms = relation_loss(
            tiny_parts, r, tensors["micro0.x0"], tensors["micro0.noise"], tensors["micro0.timesteps"],
            tensors["micro0.input_ids"], tensors["micro0.positive_ids"],
        )  # fmt: skip
    for name, got in (("encoder_hidden_states", terms.context), ("model_pred", terms.model_pred)):
        golden = tensors[f"micro0.{name}"]
        assert float((got - golden).abs().max()) <= 1e-5 * float(golden.abs().max()), name


def test_vae_posterior_moments_match_the_record(tiny, record):
    from comfyui_analogist.analogist_reversion.comfy_parts import vae_moments

    tensors, _ = record
    with torch.no_grad():
        mean, std = vae_moments(tiny.first_stage_model, torch.float32)(
            tensors["micro0.pixel_values"]
        )
    for got, golden in ((mean, tensors["micro0.latent_mean"]), (std, tensors["micro0.latent_std"])):
        assert float((got - golden).abs().max()) <= 1e-5 * float(golden.abs().max())


def test_folder_data_gives_the_recorded_pixels(record):
    from comfyui_analogist.analogist_reversion.data import exemplars_from_folder

    tensors, meta = record
    by_name = {e.name: e for e in exemplars_from_folder(goldens.GOLDENS / "exemplars", 128)}
    for i, name in enumerate(meta["micro_steps"][0]["images"]):
        golden = tensors["micro0.pixel_values"][i]
        assert float((by_name[name].pixels - golden).abs().max()) <= 1e-6, name
