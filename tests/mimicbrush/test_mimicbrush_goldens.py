"""MimicBrush through the pack's loader against the official run's goldens.

The official code ran on tiny random weights (tests/goldens/mimicbrush, see its README);
the same weights are rebuilt here, written in the official file formats, loaded through
``analogist_mimicbrush`` and ComfyUI's own classes, and must reproduce every recorded
intermediate to the README's tolerances (fp32, ComfyUI's pytorch attention).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_mimicbrush import images, pipeline
from support import mimicbrush as smb


@pytest.fixture(scope="module")
def prepared(models, vae, golden_inputs):
    import comfy.clip_model
    from comfy.ldm.modules import attention

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(attention, "optimized_attention", attention.attention_pytorch)
        mp.setattr(
            comfy.clip_model,
            "optimized_attention_for_device",
            lambda *a, **k: attention.attention_pytorch,
        )
        p = smb.params()
        return pipeline.prepare(
            models,
            vae,
            golden_inputs["target"],
            golden_inputs["mask"],
            golden_inputs["reference"],
            shape_control=p["enable_shape_control"],
            samples=1,
            seed=p["seed"],
        )


def test_rebuilt_weights_are_bit_identical_to_the_official_ones():
    for comp in smb.manifest()["components"]:
        assert smb.digest(smb.state_dicts()[comp["name"]]) == comp["sha256"], comp["name"]


@pytest.mark.parametrize("name", ["image_embeds_cond", "image_embeds_uncond", "depth_feature"])
def test_encoders_match_the_official_run(prepared, trace, name):
    assert smb.rel(getattr(prepared, name), trace[name]) <= 1e-5


def test_depth_map_from_the_official_518_input(models, trace):
    x = images.depth_normalise(
        smb.load_png("intermediates/depth_input_518.png"), shape_control=True
    )
    with torch.no_grad():
        depth = models.depth.model.anything(x)
        feature = models.depth.model.guider(trace["depth_map"])
    assert smb.rel(depth, trace["depth_map"]) <= 1e-5
    assert smb.rel(feature, trace["depth_feature"]) <= 1e-5


def test_vae_posterior_moments(vae, trace):
    for png, key in (
        ("intermediates/reference_512.png", "reference_latent"),
        ("intermediates/collage_512.png", "masked_latent"),
    ):
        mean, std = pipeline.vae_posterior(vae, images.to_unit_range(smb.load_png(png)))
        assert smb.rel(mean, trace[f"{key}_mean"]) <= 1e-5
        assert smb.rel(std, trace[f"{key}_std"]) <= 1e-5


@pytest.mark.parametrize(
    "name", ["reference_latents", "masked_latents", "mask_latent", "initial_noise"]
)
def test_latents_and_the_official_generator_order(prepared, trace, name):
    ours = prepared.noise if name == "initial_noise" else getattr(prepared, name)
    assert smb.rel(ours, trace[name]) <= 1e-5


def test_one_unet_call_cond_and_uncond(models, pytorch_attention):
    from comfyui_analogist.analogist_mimicbrush.reference_attention import patch_model

    g = smb.load_tensors("unet_call.safetensors")
    assert torch.equal(g["reference_context"], g["context"])
    model = patch_model(
        models.imitative, models.reference, g["reference_latents"], g["context"][1:2]
    )
    eps = smb.unet_call_eps(
        model, g["x"], g["context"], int(g["t"][0]), [1, 0]
    )  # rows [uncond, cond]
    assert smb.rel(eps, g["noise_pred"]) <= 1e-5
    control = g["noise_pred_without_reference"]
    # The reference moves the cond row (by ~1e-2 here); the uncond row is plain.
    assert (eps[1] - control[1]).abs().max() > 1e-3
    assert smb.rel(eps[0], control[0]) <= 1e-5


def test_rows_are_found_from_cond_or_uncond_not_position(models, pytorch_attention):
    """ComfyUI orders cond first: the same call with rows swapped gives the same rows."""
    from comfyui_analogist.analogist_mimicbrush.reference_attention import patch_model

    g = smb.load_tensors("unet_call.safetensors")
    model = patch_model(
        models.imitative, models.reference, g["reference_latents"], g["context"][1:2]
    )
    swapped = smb.unet_call_eps(model, g["x"].flip(0), g["context"].flip(0), int(g["t"][0]), [0, 1])
    assert smb.rel(swapped.flip(0), g["noise_pred"]) <= 1e-5


class _TeacherForcing:
    """A ComfyUI sampler that feeds the recorded latents at the recorded timesteps and
    records the model's cond and uncond noise predictions (through ComfyUI's own CFG)."""

    def __init__(self, latents: list[torch.Tensor], sigmas: list[torch.Tensor]):
        self.latents, self.sigmas, self.preds = latents, sigmas, []

    def cfg_function(self, args):
        sigma = args["sigma"].reshape(-1, 1, 1, 1)
        x = args["input"]
        self.preds.append(
            ((x - args["uncond_denoised"]) / sigma, (x - args["cond_denoised"]) / sigma)
        )
        return args["uncond_denoised"] + args["cond_scale"] * (
            args["cond_denoised"] - args["uncond_denoised"]
        )

    def sampler(self):
        import comfy.samplers

        def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
            extra_args = extra_args or {}
            s_in = x.new_ones([x.shape[0]])
            for latent, sigma in zip(self.latents, self.sigmas, strict=True):
                model(latent * (sigma**2 + 1).sqrt(), sigma * s_in, **extra_args)
            return x

        return comfy.samplers.KSAMPLER(sample)


def test_every_step_noise_predictions_by_teacher_forcing(prepared, trace, pytorch_attention):
    import comfy.sample

    p = smb.params()
    timesteps = [int(t) for t in trace["timesteps"]]
    model = prepared.model.clone()
    sampling = model.model.model_sampling
    sigmas = [sampling.sigmas[t] for t in timesteps]
    latents = [trace["initial_noise"]] + [
        trace[f"step{i}.latents"] for i in range(len(timesteps) - 1)
    ]
    forcing = _TeacherForcing(latents, sigmas)
    model.set_model_sampler_cfg_function(forcing.cfg_function)
    comfy.sample.sample_custom(
        model,
        prepared.noise,
        p["guidance_scale"],
        forcing.sampler(),
        torch.stack(sigmas + [torch.tensor(0.0)]),
        prepared.positive,
        prepared.negative,
        prepared.latent["samples"],
        seed=0,
    )
    assert len(forcing.preds) == len(timesteps)
    for i, (uncond, cond) in enumerate(forcing.preds):
        assert (uncond - trace[f"step{i}.noise_pred_uncond"]).abs().max() <= 1e-4, i
        assert (cond - trace[f"step{i}.noise_pred_cond"]).abs().max() <= 1e-4, i


def test_decode_of_the_final_latents(vae, trace):
    decoded = vae.decode(trace["final_latents"] / smb.params()["vae_scaling_factor"])
    ours = images.decoded_to_u8(decoded[0])
    golden = smb.load_png("outputs/decoded_512.png")
    assert np.abs(ours.astype(int) - golden.astype(int)).max() <= 1


def test_paste_back_over_the_target(golden_inputs):
    decoded = smb.image_tensor("outputs/decoded_512.png")
    pasted = pipeline.paste(decoded, golden_inputs["target"], golden_inputs["mask"])
    ours = images.image_to_u8(pasted[0]).astype(int)
    golden = smb.load_png("outputs/result.png").astype(int)
    # The resize back is torch's bilinear (OpenCV's differs by <= 1 level on some pixels).
    assert np.abs(ours - golden).max() <= 1


def test_the_whole_loop_through_the_exact_ddim_nodes(prepared, trace, pytorch_attention):
    """The official loop end to end in ComfyUI: MimicBrush's MODEL and conditioning sampled
    by SamplerCustom's path with the pack's diffusers-exact DDIM (3 steps, strength 1, CFG 5)
    from the official initial noise: every step's latents, the final latents, the decoded
    image. Nothing recorded is fed back in (unlike the teacher-forced test above)."""
    import comfy.sample
    from comfyui_analogist.nodes.sampling import AnalogistDDIMSampler, AnalogistDDIMSigmas

    p = smb.params()
    timesteps = [int(t) for t in trace["timesteps"]]
    (sigmas,) = AnalogistDDIMSigmas().get_sigmas(prepared.model, len(timesteps), 1.0)
    (sampler,) = AnalogistDDIMSampler().get_sampler()
    steps: list[torch.Tensor] = []
    final = comfy.sample.sample_custom(
        prepared.model,
        prepared.noise,
        p["guidance_scale"],
        sampler,
        sigmas,
        prepared.positive,
        prepared.negative,
        prepared.latent["samples"],
        callback=lambda step, x0, x, total: steps.append(x.clone()),
        seed=0,
    )
    assert torch.equal(prepared.noise, trace["initial_noise"])
    for i in range(len(timesteps) - 1):
        assert (steps[i] - trace[f"step{i}.latents"]).abs().max() <= 1e-4, i
    # ComfyUI hands back the VAE's own latent space (it divides by the 0.18215 scale).
    final = prepared.model.model.process_latent_in(final)
    assert (final - trace["final_latents"]).abs().max() <= 1e-4
