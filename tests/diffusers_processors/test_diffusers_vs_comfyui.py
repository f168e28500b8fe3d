"""The diffusers processors and the ComfyUI nodes compute the same thing on the same weights.

A random diffusers UNet is loaded into ComfyUI through the host's own diffusers loader
(``comfy.sd.load_diffusion_model_state_dict`` on ComfyUI 0.30, ``load_unet_state_dict``
on 0.0.1, both converting keys with ``comfy.utils.unet_to_diffusers``), patched with the
real AnalogistSACPatch / AnalogistCAMPatch nodes, and asked for the noise prediction of
the same latent, timestep and text embedding as the diffusers UNet with our processors.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers.models", reason="diffusers is not installed in this Python")

from comfyui_analogist.analogist_attn.blocks import transformer_block_keys  # noqa: E402
from comfyui_analogist.analogist_diffusers import (  # noqa: E402
    install_analogist,
    remove_analogist,
    transformer_layers,
)
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENT_ALIGNED, make_layout  # noqa: E402
from comfyui_analogist.nodes import NODE_CLASS_MAPPINGS  # noqa: E402
from support.diffusers_models import SD15_INPAINT_DIFFUSERS, tiny_unet  # noqa: E402
from support.sd15 import tiny_unet_config  # noqa: E402

LATENT = 16
LAYOUT = make_layout(cell_width=64, cell_height=64)
CONTEXT_DIM = 64


@pytest.fixture(scope="module")
def diffusers_unet():
    return tiny_unet(seed=7)


@pytest.fixture(scope="module")
def comfy_model(diffusers_unet):
    return load_into_comfyui(diffusers_unet)


def load_into_comfyui(unet):
    """ComfyUI's own diffusers-UNet loader; only its detection table is told the toy widths.

    ``model_config_from_diffusers_unet`` recognises diffusers UNets by a table of full-size
    configs (SD1.5 inpainting: 320 channels, context 768); the tiny UNet has SD1.5's
    structure at toy widths, so the test gives the loader that config. Key conversion,
    model construction and weight loading are the host's.
    """
    import comfy.model_detection
    import comfy.sd
    import comfy.supported_models

    state = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    saved = comfy.model_detection.model_config_from_diffusers_unet
    comfy.model_detection.model_config_from_diffusers_unet = lambda sd: comfy.supported_models.SD15(
        tiny_unet_config()
    )
    try:
        if hasattr(comfy.sd, "load_diffusion_model_state_dict"):  # ComfyUI 0.30
            patcher = comfy.sd.load_diffusion_model_state_dict(
                state, model_options={"dtype": torch.float32}
            )
        else:  # ComfyUI 0.0.1
            patcher = comfy.sd.load_unet_state_dict(state)
    finally:
        comfy.model_detection.model_config_from_diffusers_unet = saved
    assert patcher is not None, "ComfyUI did not load the diffusers UNet"
    patcher.model.eval()
    return patcher


def node_patch(node_id, model, **inputs):
    """Run a node's FUNCTION with its own defaults for every input not given."""
    cls = NODE_CLASS_MAPPINGS[node_id]
    kwargs = {}
    for section in ("required", "optional"):
        for name, spec in cls.INPUT_TYPES().get(section, {}).items():
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if "default" in options:
                kwargs[name] = options["default"]
            elif isinstance(kind, (list, tuple)):
                kwargs[name] = kind[0]
    kwargs.update(model=model, **inputs)
    return getattr(cls(), cls.FUNCTION)(**kwargs)[0]


def patched_comfy(model, layout, start, end):
    sac = node_patch("AnalogistSACPatch", model, layout=layout, start_layer=start, end_layer=end)
    return node_patch("AnalogistCAMPatch", sac, layout=layout, start_layer=start, end_layer=end)


def inputs(seed=0):
    """A CFG batch: [uncond, cond], with the inpainting channels (mask + masked latent)."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(2, 4, LATENT, LATENT, generator=gen)
    concat = torch.randn(2, 5, LATENT, LATENT, generator=gen)
    context = torch.randn(2, 77, CONTEXT_DIM, generator=gen)
    return latent, concat, context


def comfy_eps(patcher, latent, concat, context, timestep):
    """Noise prediction through ComfyUI's BaseModel.apply_model (as its samplers call it)."""
    sampling = patcher.get_model_object("model_sampling")
    sigma = sampling.sigma(torch.full((latent.shape[0],), float(timestep)))
    options = dict(patcher.model_options["transformer_options"])
    options.update(cond_or_uncond=[1, 0], sigmas=sigma)
    with torch.no_grad():
        denoised = patcher.model.apply_model(
            latent, sigma, c_concat=concat, c_crossattn=context, transformer_options=options
        )
    # eps models: denoised = x - eps * sigma
    return (latent - denoised) / sigma.view(-1, 1, 1, 1), sampling, sigma


def diffusers_eps(unet, sampling, sigma, latent, concat, context):
    """The same call in diffusers terms: scaled input, ComfyUI's timestep for that sigma."""
    scaled = sampling.calculate_input(sigma, latent)
    with torch.no_grad():
        return unet(
            torch.cat([scaled, concat], dim=1),
            sampling.timestep(sigma),
            encoder_hidden_states=context,
        ).sample


def test_full_size_sd15_inpainting_config_is_what_comfyui_detects_and_converts():
    """The diffusers config the tiny UNet scales down is SD1.5 inpainting for ComfyUI."""
    import comfy.model_detection
    import comfy.utils
    from comfy import ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_INPAINT_DIFFUSERS)
    state = unet.state_dict()
    config = comfy.model_detection.model_config_from_diffusers_unet(state)
    if config is None:
        # ComfyUI 0.0.1's table has no diffusers SD1.5 *inpainting* entry (later versions
        # do): it must still detect the same UNet with SD1.5's 4 input channels.
        plain_sd15 = {**state, "conv_in.weight": torch.empty(320, 4, 3, 3, device="meta")}
        config = comfy.model_detection.model_config_from_diffusers_unet(plain_sd15)
        assert type(config).__name__ == "SD15"
        unet_config = {**config.unet_config, "in_channels": 9}
    else:
        assert type(config).__name__ == "SD15"
        unet_config = config.unet_config
    assert unet_config["in_channels"] == 9
    keys = comfy.utils.unet_to_diffusers(unet_config)
    assert set(state) <= set(keys), f"unconverted: {sorted(set(state) - set(keys))[:5]}"
    comfy_unet = UNetModel(**{**unet_config, "device": "meta"}, operations=ops.disable_weight_init)
    comfy_state = comfy_unet.state_dict()
    assert {keys[k] for k in state} == set(comfy_state)
    assert all(comfy_state[keys[k]].shape == state[k].shape for k in state)
    assert [layer.comfy_key for layer in transformer_layers(unet)] == transformer_block_keys(
        comfy_unet
    )


def test_comfyui_loads_every_weight_and_numbers_the_blocks_alike(diffusers_unet, comfy_model):
    import comfy.utils

    keys = comfy.utils.unet_to_diffusers(tiny_unet_config())
    ours = diffusers_unet.state_dict()
    theirs = comfy_model.model.diffusion_model.state_dict()
    assert {keys[k] for k in ours} == set(theirs)
    assert all(torch.equal(theirs[keys[k]], v) for k, v in ours.items())
    assert [
        layer.comfy_key for layer in transformer_layers(diffusers_unet)
    ] == transformer_block_keys(comfy_model.model)


@pytest.mark.parametrize(
    ("start", "end", "aligned"),
    [(3, 11, False), (0, 16, False), (4, 8, True)],
    ids=["paper-layers", "all-16-blocks", "aligned-4-to-7"],
)
def test_comfyui_patch_and_diffusers_processors_predict_the_same_noise(
    diffusers_unet, comfy_model, start, end, aligned
):
    layout = make_layout(64, 64, arrangement=ARRANGEMENT_ALIGNED) if aligned else LAYOUT
    latent, concat, context = inputs(seed=start)
    timestep = 500

    plain_comfy, sampling, sigma = comfy_eps(comfy_model, latent, concat, context, timestep)
    plain_diffusers = diffusers_eps(diffusers_unet, sampling, sigma, latent, concat, context)
    assert (plain_comfy - plain_diffusers).abs().max() <= 1e-4 * plain_diffusers.abs().max()

    patched = patched_comfy(comfy_model, layout, start, end)
    got_comfy, _, _ = comfy_eps(patched, latent, concat, context, timestep)
    installation = install_analogist(
        diffusers_unet, layout, sac_layers=(start, end), cam_layers=(start, end)
    )
    try:
        got_diffusers = diffusers_eps(diffusers_unet, sampling, sigma, latent, concat, context)
    finally:
        remove_analogist(diffusers_unet)

    assert set(installation.calls()["sac"]) == set(range(start, end))
    assert all(count == 1 for count in installation.calls()["sac"].values())
    assert (got_comfy - got_diffusers).abs().max() <= 1e-4 * got_diffusers.abs().max()
    assert (got_diffusers - plain_diffusers).abs().max() > 1e-3 * plain_diffusers.abs().max()
