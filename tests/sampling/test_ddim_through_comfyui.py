"""ComfyUI's real SamplerCustom(Advanced) with the Analogist DDIM pair equals diffusers.

A tiny SD1.5-structured model (ComfyUI's own BaseModel and UNet, random weights) is sampled
through the host's SamplerCustom node (and SamplerCustomAdvanced) with the SIGMAS of
AnalogistDDIMSigmas and the SAMPLER of AnalogistDDIMSampler. The reference is diffusers'
own ``DDIMScheduler`` in the official pipelines' loop, stepping the same UNet's eps
predictions at the same integer timesteps with the same noise: strength 1 starts from the
noise, below 1 from ``scheduler.add_noise(latent, noise, t_start)`` with diffusers' own
``init_timestep`` arithmetic. ComfyUI's own ddim + ddim_uniform is shown to miss.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers (tests/requirements-test.txt) is not installed")

from comfyui_analogist.nodes import NODE_CLASS_MAPPINGS  # noqa: E402
from support.sd15 import tiny_inpaint_model_patcher  # noqa: E402

# max |diff| / max |reference| in the model's (scaled) latent space. fp32 throughout; what is
# left is ComfyUI doing CFG on x0 (not eps) and batching cond with uncond: measured 1e-6 to
# 4e-6 of the latents' range (up to 50 steps, CFG 7.5). ComfyUI's own ddim misses by ~1e-3.
TOLERANCE = 1e-5
CONTEXT_DIM = 64
SEED = 1234


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny UNet is 10x faster on one thread than fighting other processes for several."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def custom_sampler_nodes():
    try:
        from comfy_extras import nodes_custom_sampler as module  # ComfyUI 0.30
    except ImportError:
        from comfy_extras.nodes import nodes_custom_sampler as module  # comfyui 0.0.1
    return module


def run_node(cls, **inputs):
    """A host node's outputs as a tuple, for the V3 (``execute``) and V1 (FUNCTION) APIs."""
    if hasattr(cls, "define_schema"):
        return tuple(cls.execute(**inputs).result)
    return tuple(getattr(cls(), cls.FUNCTION)(**inputs))


@pytest.fixture(scope="module")
def model():
    return tiny_inpaint_model_patcher(seed=3, in_channels=4, context_dim=CONTEXT_DIM)


@pytest.fixture(scope="module")
def conds():
    gen = torch.Generator().manual_seed(5)
    cond = torch.randn(1, 7, CONTEXT_DIM, generator=gen)
    uncond = torch.randn(1, 7, CONTEXT_DIM, generator=gen) * 0.5
    return cond, uncond


def source_latent(batch: int = 1) -> torch.Tensor:
    """An image's latent as ComfyUI's LATENT holds it (unscaled VAE space)."""
    return torch.randn((batch, 4, 16, 16), generator=torch.Generator().manual_seed(9)) * 4.0


def empty_latent(batch: int = 1) -> torch.Tensor:
    return torch.zeros((batch, 4, 16, 16))


def analogist_pair(model, steps, strength):
    sigmas = NODE_CLASS_MAPPINGS["AnalogistDDIMSigmas"]().get_sigmas(model, steps, strength)[0]
    sampler = NODE_CLASS_MAPPINGS["AnalogistDDIMSampler"]().get_sampler()[0]
    return sigmas, sampler


def sampler_custom(model, conds, cfg, sampler, sigmas, latent):
    cond, uncond = conds
    out = run_node(
        custom_sampler_nodes().SamplerCustom,
        model=model,
        add_noise=True,
        noise_seed=SEED,
        cfg=cfg,
        positive=[[cond, {}]],
        negative=[[uncond, {}]],
        sampler=sampler,
        sigmas=sigmas,
        latent_image={"samples": latent.clone()},
    )
    return out[0]["samples"]


def diffusers_reference(model, conds, cfg, steps, strength, latent, prediction_type="epsilon"):
    """The official pipelines' loop with diffusers' DDIMScheduler on the same UNet."""
    import comfy.sample
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type=prediction_type,
    )
    scheduler.set_timesteps(steps)
    init_timestep = min(int(steps * strength), steps)
    t_start = max(steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order :]
    noise = comfy.sample.prepare_noise(latent, SEED, None)  # SamplerCustom's noise
    image_latents = model.model.process_latent_in(latent)
    if strength == 1.0:
        x = noise * scheduler.init_noise_sigma
    else:
        x = scheduler.add_noise(image_latents, noise, timesteps[:1].repeat(latent.shape[0]))
    unet = model.model.diffusion_model
    cond, uncond = (c.expand(latent.shape[0], -1, -1) for c in conds)
    with torch.no_grad():
        for t in timesteps:
            t_in = torch.full((latent.shape[0],), float(t))
            eps_c = unet(x, t_in, context=cond)
            if cfg == 1.0:
                eps = eps_c
            else:
                eps_u = unet(x, t_in, context=uncond)
                eps = eps_u + cfg * (eps_c - eps_u)
            x = scheduler.step(eps, t, x).prev_sample
    return x


def max_error(comfy_out, model, reference) -> float:
    """max |diff| relative to max |reference|, in the sampler's (scaled) latent space."""
    diff = (model.model.process_latent_in(comfy_out) - reference).abs().max()
    return (diff / reference.abs().max()).item()


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("steps", "strength", "cfg", "latent_kind", "batch"),
    [
        (2, 1.0, 5.0, "empty", 2),
        (5, 1.0, 1.0, "empty", 1),
        (7, 1.0, 5.0, "image", 1),  # strength 1 ignores the latent, as diffusers' inpaint pipeline
        (10, 0.6, 5.0, "image", 2),
        (8, 0.5, 1.0, "image", 1),
        pytest.param(50, 1.0, 5.0, "empty", 1, marks=SLOW),  # MimicBrush's settings
        # 49 of 50 steps: the same timesteps as a 49-step run, but noised from the latent
        pytest.param(50, 0.98, 7.5, "image", 1, marks=SLOW),
    ],
)
def test_sampler_custom_equals_diffusers_ddim(
    model, conds, steps, strength, cfg, latent_kind, batch
):
    latent = empty_latent(batch) if latent_kind == "empty" else source_latent(batch)
    sigmas, sampler = analogist_pair(model, steps, strength)
    out = sampler_custom(model, conds, cfg, sampler, sigmas, latent)
    reference = diffusers_reference(model, conds, cfg, steps, strength, latent)
    error = max_error(out, model, reference)
    assert error <= TOLERANCE, f"max |diff| / max |reference| = {error:.3g}"


def test_sampler_custom_advanced_equals_diffusers_ddim(model, conds):
    nodes = custom_sampler_nodes()
    cond, uncond = conds
    latent = source_latent(2)
    steps, strength, cfg = 6, 0.7, 4.0
    sigmas, sampler = analogist_pair(model, steps, strength)
    guider = run_node(
        nodes.CFGGuider, model=model, positive=[[cond, {}]], negative=[[uncond, {}]], cfg=cfg
    )[0]
    noise = run_node(nodes.RandomNoise, noise_seed=SEED)[0]
    out = run_node(
        nodes.SamplerCustomAdvanced,
        noise=noise,
        guider=guider,
        sampler=sampler,
        sigmas=sigmas,
        latent_image={"samples": latent.clone()},
    )[0]["samples"]
    reference = diffusers_reference(model, conds, cfg, steps, strength, latent)
    error = max_error(out, model, reference)
    assert error <= TOLERANCE, f"max |diff| / max |reference| = {error:.3g}"


@pytest.mark.parametrize(("steps", "strength"), [(2, 1.0), (10, 1.0), (10, 0.6)])
def test_comfyui_own_ddim_differs_from_diffusers(model, conds, steps, strength):
    """ComfyUI's ddim sampler + ddim_uniform scheduler (KSampler's way) misses diffusers."""
    import comfy.samplers

    latent = source_latent() if strength < 1 else empty_latent()
    # KSampler's denoise: the last steps of a schedule of steps / denoise steps.
    full = comfy.samplers.calculate_sigmas(
        model.get_model_object("model_sampling"), "ddim_uniform", int(steps / strength)
    )
    sigmas = full[-(steps + 1) :] if strength < 1 else full
    sampler = comfy.samplers.sampler_object("ddim")
    out = sampler_custom(model, conds, 5.0, sampler, sigmas, latent)
    reference = diffusers_reference(model, conds, 5.0, steps, strength, latent)
    error = max_error(out, model, reference)
    assert error > 100 * TOLERANCE, f"ComfyUI's ddim matched diffusers to {error:.3g}"
    ours = sampler_custom(
        model, conds, 5.0, *reversed(analogist_pair(model, steps, strength)), latent
    )
    assert max_error(ours, model, reference) <= TOLERANCE


def test_a_latent_noise_mask_keeps_the_source_outside_the_mask(model, conds):
    """With Set Latent Noise Mask, the unmasked half ends as the source latent itself."""
    latent = source_latent()
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0
    sigmas, sampler = analogist_pair(model, 4, 0.75)
    cond, uncond = conds
    out = run_node(
        custom_sampler_nodes().SamplerCustom,
        model=model,
        add_noise=True,
        noise_seed=SEED,
        cfg=5.0,
        positive=[[cond, {}]],
        negative=[[uncond, {}]],
        sampler=sampler,
        sigmas=sigmas,
        latent_image={"samples": latent.clone(), "noise_mask": mask},
    )[0]["samples"]
    kept = (out[..., 8:] - latent[..., 8:]).abs().max().item()
    assert kept <= 1e-5 * latent.abs().max().item(), kept
    assert (out[..., :8] - latent[..., :8]).abs().max().item() > 0.1  # the masked half changed


def v_prediction_model():
    """The same tiny UNet in ComfyUI's BaseModel as a v-prediction model (SD2.x-768 style)."""
    import comfy.model_base
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    from support.sd15 import randomize_, tiny_unet_config

    config = comfy.supported_models.SD15(tiny_unet_config(in_channels=4, context_dim=CONTEXT_DIM))
    config.set_inference_dtype(torch.float32, None)
    base = comfy.model_base.BaseModel(
        config, model_type=comfy.model_base.ModelType.V_PREDICTION, device="cpu"
    )
    randomize_(base.diffusion_model, 3)
    base.eval()
    return comfy.model_patcher.ModelPatcher(
        base,
        load_device=comfy.model_management.get_torch_device(),
        offload_device=comfy.model_management.unet_offload_device(),
    )


@pytest.mark.parametrize(("steps", "strength"), [(4, 1.0), (6, 0.5)])
def test_v_prediction_models_equal_diffusers_ddim_too(conds, steps, strength):
    model = v_prediction_model()
    latent = source_latent()
    sigmas, sampler = analogist_pair(model, steps, strength)
    out = sampler_custom(model, conds, 5.0, sampler, sigmas, latent)
    reference = diffusers_reference(model, conds, 5.0, steps, strength, latent, "v_prediction")
    error = max_error(out, model, reference)
    assert error <= TOLERANCE, f"max |diff| / max |reference| = {error:.3g}"
