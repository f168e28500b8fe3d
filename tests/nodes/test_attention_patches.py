"""SACPatch and CAMPatch on a real ComfyUI model (in-process host, toy-width SD1.5 UNet).

The model is ComfyUI's own SD1.5 class with an inpainting (9-channel) UNet of SD1.5's
block structure, so the paper's 16 transformer blocks exist; sampling uses
``comfy.sample``. The naive reference patches (full logit matrix) are the oracle.
"""

from __future__ import annotations

import functools
import logging

import pytest
import torch
from comfyui_analogist.analogist_attn.blocks import (
    transformer_block_keys,
    transformer_block_modules,
)
from comfyui_analogist.analogist_attn.cam import cam_mask_output
from comfyui_analogist.analogist_attn.geometry import regions_for_block
from comfyui_analogist.analogist_attn.oracle import cam_reference
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENT_ALIGNED, ARRANGEMENTS, make_layout
from comfyui_analogist.nodes.attention import AnalogistApply, AnalogistCAMPatch, AnalogistSACPatch
from comfyui_analogist.nodes.patching import PASSES, block_key
from support.lora import random_unet_lora
from support.reference_patch import reference_patched
from support.sd15 import tiny_inpaint_model_patcher

CONTEXT_DIM = 64
LATENT = 16  # a 128 x 128 px grid of 64 px cells: the deepest level has 1 token per cell
LAYOUT = make_layout(cell_width=64, cell_height=64)


@pytest.fixture(scope="module")
def base_model():
    return tiny_inpaint_model_patcher(seed=0)


def sac(
    model,
    layout=LAYOUT,
    scale=1.3,
    start=3,
    end=11,
    start_percent=0.0,
    end_percent=1.0,
    passes=PASSES[0],
    **optional,
):
    return AnalogistSACPatch().patch(
        model, layout, scale, start, end, start_percent, end_percent, passes, **optional
    )[0]


def cam(
    model,
    layout=LAYOUT,
    start=3,
    end=11,
    start_percent=0.0,
    end_percent=1.0,
    passes=PASSES[0],
    **optional,
):
    return AnalogistCAMPatch().patch(
        model, layout, start, end, start_percent, end_percent, passes, **optional
    )[0]


def apply_both(
    model,
    layout=LAYOUT,
    scale=1.3,
    start=3,
    end=11,
    start_percent=0.0,
    end_percent=1.0,
    passes=PASSES[0],
    **optional,
):
    return AnalogistApply().patch(
        model, layout, scale, start, end, start_percent, end_percent, passes, **optional
    )[0]


def inputs(seed=0, height=LATENT, width=LATENT, batch=1):
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, 4, height, width, generator=gen)
    mask = torch.zeros(batch, 1, height, width)
    mask[..., height // 2 :, width // 2 :] = 1.0
    cond = torch.randn(1, 77, CONTEXT_DIM, generator=gen)
    uncond = torch.randn(1, 77, CONTEXT_DIM, generator=gen)
    extra = {"concat_latent_image": latent, "concat_mask": mask}
    return latent, [[cond, dict(extra)]], [[uncond, dict(extra)]]


def sample(model, seed=0, steps=3, height=LATENT, width=LATENT, batch=1, cfg=7.5):
    import comfy.sample

    latent, positive, negative = inputs(seed, height, width, batch)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed + 100))
    return comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        "ddim",
        "normal",
        positive,
        negative,
        latent,
        denoise=0.98,
        disable_pbar=True,
        seed=seed,
    )


def unet_call(model, seed=0, dtype=torch.float32, height=LATENT, width=LATENT):
    """One UNet evaluation at batch 2 (cond + uncond), with the model's attention patches."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, height, width, generator=gen)
    concat = torch.randn(2, 5, height, width, generator=gen)
    context = torch.randn(2, 77, CONTEXT_DIM, generator=gen)
    sigma = torch.full((2,), 5.0)
    options = dict(model.model_options["transformer_options"])
    options.update(cond_or_uncond=[0, 1], sigmas=sigma)
    with torch.no_grad():
        return model.model.apply_model(
            x, sigma, c_concat=concat, c_crossattn=context, transformer_options=options
        )


def test_block_walk_gives_the_papers_16_blocks(base_model):
    keys = transformer_block_keys(base_model.model)
    assert keys == (
        [("input", i, 0) for i in (1, 2, 4, 5, 7, 8)]
        + [("middle", 0, 0)]
        + [("output", i, 0) for i in range(3, 12)]
    )


def test_block_modules_follow_the_same_keys(base_model):
    modules = transformer_block_modules(base_model.model)
    assert list(modules) == transformer_block_keys(base_model.model)
    unet = base_model.model.diffusion_model
    assert modules[("middle", 0, 0)] is unet.middle_block[1].transformer_blocks[0]
    assert modules[("output", 4, 0)] is unet.output_blocks[4][1].transformer_blocks[0]


@pytest.mark.parametrize("arrangement_aligned", [False, True])
def test_patched_unet_equals_naive_reference_at_the_papers_layers(base_model, arrangement_aligned):
    layout = make_layout(64, 64, arrangement=ARRANGEMENT_ALIGNED) if arrangement_aligned else LAYOUT
    fast = cam(sac(base_model, layout), layout)
    blocks = transformer_block_keys(base_model.model)[3:11]
    naive = reference_patched(base_model, layout, blocks)
    plain = unet_call(base_model)
    got, want = unet_call(fast), unet_call(naive)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert (got - plain).abs().max() > 1e-3 * plain.abs().max(), "the patches changed nothing"


@pytest.mark.parametrize("arrangement_aligned", [False, True])
def test_patched_unet_equals_naive_reference_with_two_example_pairs(
    base_model, arrangement_aligned
):
    arrangement = ARRANGEMENT_ALIGNED if arrangement_aligned else ARRANGEMENTS[0]
    layout = make_layout(64, 64, arrangement=arrangement, pairs=2)  # 3 rows (or columns) of cells
    height, width = layout.grid_height // 8, layout.grid_width // 8
    fast = cam(sac(base_model, layout), layout)
    blocks = transformer_block_keys(base_model.model)[3:11]
    naive = reference_patched(base_model, layout, blocks)
    plain = unet_call(base_model, height=height, width=width)
    got, want = (
        unet_call(fast, height=height, width=width),
        unet_call(naive, height=height, width=width),
    )
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()
    assert (got - plain).abs().max() > 1e-3 * plain.abs().max(), "the patches changed nothing"


def cam_patch(model):
    (fn,) = [
        p
        for p in model.model_options["transformer_options"]["patches"]["attn2_output_patch"]
        if getattr(p, "analogist_kind", None) == "cam"
    ]
    return fn


def test_patches_fire_on_exactly_the_chosen_blocks(base_model):
    model = cam(sac(base_model, start=5, end=9), start=0, end=2)
    sample(model)
    keys = transformer_block_keys(base_model.model)
    sac_fn = model.model_options["transformer_options"]["patches_replace"]["attn1"][keys[5]]
    cam_fn = cam_patch(model)
    assert set(sac_fn.calls) == set(keys[5:9])
    assert set(cam_fn.calls) == set(keys[0:2])
    assert set(model.model_options["transformer_options"]["patches_replace"]["attn1"]) == set(
        keys[5:9]
    )
    # CAM leaves the cross-attention replace slot free for other nodes.
    assert "attn2" not in model.model_options["transformer_options"]["patches_replace"]


def test_input_model_is_untouched_and_samples_as_without_the_pack(base_model):
    before = sample(base_model)
    patched = cam(sac(base_model))
    after_patched = sample(patched)
    after = sample(base_model)
    assert "patches_replace" not in base_model.model_options["transformer_options"]
    assert torch.equal(before, after)
    assert not torch.allclose(before, after_patched)


def test_sac_then_cam_equals_cam_then_sac(base_model):
    assert torch.equal(unet_call(cam(sac(base_model))), unet_call(sac(cam(base_model))))


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"scale": 1.7, "start": 2, "end": 9, "passes": "cond only"},
        {"end": 0, "start_percent": 0.2, "end_percent": 0.7},
    ],
)
def test_the_combined_node_equals_sac_then_cam_with_the_same_settings(base_model, settings):
    cam_settings = {key: value for key, value in settings.items() if key != "scale"}
    chained = cam(sac(base_model, **settings), **cam_settings)
    combined = apply_both(base_model, **settings)
    assert torch.equal(unet_call(combined), unet_call(chained))
    assert torch.equal(sample(combined), sample(chained))
    assert not torch.equal(unet_call(combined), unet_call(base_model))
    assert "patches_replace" not in base_model.model_options["transformer_options"]


def test_patches_survive_cloning_and_apply_to_a_lora_model(base_model):
    import comfy.sd

    patched = cam(sac(base_model))
    assert torch.equal(sample(patched), sample(patched.clone()))

    lora = random_unet_lora(base_model.model.diffusion_model, seed=1)
    lora_model, _ = comfy.sd.load_lora_for_models(base_model, None, lora, 1.0, 0.0)
    assert lora_model.patches, "the LoRA did not attach to the model"
    lora_patched = cam(sac(lora_model))
    with_lora = sample(lora_patched)
    assert torch.isfinite(with_lora).all()
    assert not torch.allclose(with_lora, sample(patched)), "the LoRA had no effect"
    assert not torch.allclose(with_lora, sample(lora_model)), (
        "SAC/CAM had no effect on the LoRA model"
    )
    assert lora_patched.patches.keys() == lora_model.patches.keys()


def test_schedule_range_and_passes_limit_where_the_edit_acts(base_model):
    plain = sample(base_model)
    never = cam(
        sac(base_model, start_percent=1.0, end_percent=1.0), start_percent=1.0, end_percent=1.0
    )
    assert torch.equal(sample(never), plain), "outside its schedule the patch must be invisible"

    both = unet_call(sac(base_model))
    cond_only = unet_call(sac(base_model, passes="cond only"))
    uncond_only = unet_call(sac(base_model, passes="uncond only"))
    unpatched = unet_call(base_model)
    # Batch entry 0 is cond, 1 is uncond (cond_or_uncond = [0, 1]).
    assert torch.allclose(cond_only[0], both[0], atol=1e-5) and torch.allclose(
        cond_only[1], unpatched[1], atol=1e-5
    )
    assert torch.allclose(uncond_only[1], both[1], atol=1e-5) and torch.allclose(
        uncond_only[0], unpatched[0], atol=1e-5
    )


def test_sampling_works_for_batches_and_other_latent_sizes(base_model):
    model = cam(sac(base_model))
    out = sample(model, batch=3, height=32, width=32)
    assert out.shape == (3, 4, 32, 32) and torch.isfinite(out).all()
    wide = make_layout(cell_width=128, cell_height=64)
    out = sample(cam(sac(base_model, wide), wide), height=16, width=32)
    assert out.shape == (1, 4, 16, 32) and torch.isfinite(out).all()


def test_a_latent_of_other_proportions_than_the_layout_is_a_clear_error(base_model):
    with pytest.raises(ValueError, match=r"latent is 32x16 .*layout is a 128x128 grid"):
        sample(sac(base_model), height=16, width=32)


def test_layer_range_outside_the_model_lists_the_valid_range(base_model):
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.15"):
        sac(base_model, start=3, end=17)
    with pytest.raises(ValueError, match=r"valid layers are 0\.\.15"):
        cam(base_model, start=8, end=8)
    with pytest.raises(ValueError, match="start_percent"):
        sac(base_model, start_percent=0.8, end_percent=0.2)


@pytest.mark.parametrize("node", ["sac", "cam", "apply"])
def test_a_plain_checkpoint_is_refused_in_artist_words(node):
    model = tiny_inpaint_model_patcher(seed=0, in_channels=4)
    patch = {"sac": sac, "cam": cam, "apply": apply_both}[node]
    with pytest.raises(ValueError) as err:
        patch(model)
    message = str(err.value)
    assert message.startswith(
        "This checkpoint is not an inpainting model: pick an inpainting checkpoint such as "
        "sd-v1-5-inpainting.ckpt"
    )
    assert "turn on allow_non_inpainting" in message
    assert "takes 4 input channels, an inpainting UNet 9" in message


def test_a_plain_checkpoint_runs_with_a_warning_when_allowed(caplog):
    model = tiny_inpaint_model_patcher(seed=0, in_channels=4)
    with caplog.at_level(logging.WARNING, logger="analogist"):
        patched = sac(model, allow_non_inpainting=True)
        cam(patched, allow_non_inpainting=True)
    assert "takes 4 input channels" in caplog.text and "allow_non_inpainting is on" in caplog.text
    assert len(patched.model_options["transformer_options"]["patches_replace"]["attn1"]) == 8


def test_allow_non_inpainting_is_the_last_optional_input_of_each_patch_node():
    for node in (AnalogistSACPatch, AnalogistCAMPatch, AnalogistApply):
        optional = node.INPUT_TYPES()["optional"]
        assert list(optional)[-1] == "allow_non_inpainting"
        assert optional["allow_non_inpainting"][1]["default"] is False


def test_sac_refuses_to_overwrite_another_packs_self_attention_patch(base_model):
    def other_pack_attn1(q, k, v, extra):
        return v

    other = base_model.clone()
    other.set_model_attn1_replace(other_pack_attn1, "input", 7, 0)
    with pytest.raises(ValueError, match=r"\('input', 7, 0\).*other_pack_attn1"):
        sac(other)
    # Blocks the other patch does not touch are fine: ours go there, theirs stays put.
    slots = sac(other, start=6, end=11).model_options["transformer_options"]["patches_replace"][
        "attn1"
    ]
    keys = transformer_block_keys(base_model.model)
    assert slots[("input", 7, 0)] is other_pack_attn1
    assert all(getattr(slots[key], "analogist_kind", None) == "sac" for key in keys[6:11])


@pytest.mark.parametrize("cam_first", [False, True])
def test_cam_composes_exactly_with_another_packs_cross_attention_patch(base_model, cam_first):
    seen = []

    def other_pack_attn2(q, k, v, extra):
        seen.append(block_key(extra))
        return v.mean(dim=1, keepdim=True).expand(q.shape[0], q.shape[1], v.shape[-1]) * 0.5 + 0.1

    key = ("output", 4, 0)

    def add_other(model):
        other = model.clone()
        other.set_model_attn2_replace(other_pack_attn2, *key[:2])  # a 2-part key, as some packs use
        return other

    cells = LAYOUT.geometry

    def expected(q, k, v, extra):
        regions = regions_for_block(cells, extra["original_shape"], q.shape[1], q.device)
        return cam_mask_output(other_pack_attn2(q, k, v, extra), regions)

    reference = reference_patched(base_model, LAYOUT, [], cam_blocks=[])
    for block in transformer_block_keys(base_model.model)[3:11]:
        fn = (
            expected
            if block == key
            else (
                lambda q, k, v, e: cam_reference(
                    q,
                    k,
                    v,
                    e["n_heads"],
                    regions_for_block(cells, e["original_shape"], q.shape[1], q.device),
                )
            )
        )
        reference.set_model_attn2_replace(fn, *block)
    got = unet_call(add_other(cam(base_model)) if cam_first else cam(add_other(base_model)))
    assert key in seen, "the other pack's patch must still run"
    want = unet_call(reference)
    assert (got - want).abs().max() <= 1e-4 * want.abs().max()


def test_reapplying_our_patch_replaces_it_with_a_warning(base_model, caplog):
    once = sac(base_model, scale=1.3)
    with caplog.at_level(logging.WARNING, logger="analogist"):
        twice = sac(once, scale=2.0)
    assert "replace" in caplog.text
    assert torch.equal(unet_call(twice), unet_call(sac(base_model, scale=2.0)))


def test_reapplying_cam_replaces_it_on_its_blocks_and_keeps_the_others(base_model, caplog):
    keys = transformer_block_keys(base_model.model)
    first = cam(base_model, start=3, end=8)
    with caplog.at_level(logging.WARNING, logger="analogist"):
        second = cam(first, start=6, end=11)
    assert "replace" in caplog.text
    cams = [p for p in second.model_options["transformer_options"]["patches"]["attn2_output_patch"]]
    assert sorted(b for p in cams for b in p.blocks) == sorted(keys[3:11])  # each block once
    assert torch.equal(unet_call(second), unet_call(cam(base_model, start=3, end=11)))
    assert cam_patch(first).blocks == keys[3:8], "the input model's CAM must stay as it was"


def test_sac_skipped_half_gets_the_hosts_own_attention(base_model, monkeypatch):
    """ "cond only": the uncond half is what ComfyUI's optimized_attention computes."""
    from comfy.ldm.modules import attention as comfy_attention

    calls = []
    real = comfy_attention.optimized_attention

    @functools.wraps(real)  # same signature: the patch passes what the real one accepts
    def spy(q, k, v, heads, *args, **kwargs):
        calls.append(q.shape[0])
        return real(q, k, v, heads, *args, **kwargs)

    monkeypatch.setattr(comfy_attention, "optimized_attention", spy)
    unet_call(sac(base_model, passes="cond only"))
    # 8 SAC blocks, one uncond entry each, through the host's attention.
    assert calls.count(1) == 8


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_sac_scale_is_a_clear_error(base_model, bad):
    with pytest.raises(ValueError, match=r"sac_scale=(nan|inf|-inf) is not a finite number.*1\.3"):
        sac(base_model, scale=bad)


@pytest.mark.parametrize("patcher", [sac, cam])
def test_unknown_passes_value_is_a_clear_error_listing_the_choices(base_model, patcher):
    with pytest.raises(
        ValueError, match=r"passes='both' is not a valid choice.*cond only.*uncond only"
    ):
        patcher(base_model, passes="both")


def test_half_precision_model_stays_finite():
    model = tiny_inpaint_model_patcher(seed=0, dtype=torch.bfloat16)
    out = unet_call(cam(sac(model)))
    assert torch.isfinite(out).all()
