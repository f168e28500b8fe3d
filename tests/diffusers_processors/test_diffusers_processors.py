"""SAC and CAM processors on a real diffusers UNet2DConditionModel (tiny, random, 9 channels).

The oracle is a processor written here straight from diffusers' attention (project,
attend, project out) with the naive full-matrix definitions of ``analogist_attn.oracle``.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers.models", reason="diffusers is not installed in this Python")

from comfyui_analogist.analogist_attn.geometry import regions_for_block  # noqa: E402
from comfyui_analogist.analogist_attn.oracle import cam_reference, sac_reference  # noqa: E402
from comfyui_analogist.analogist_diffusers import (  # noqa: E402
    AnalogistCAMProcessor,
    AnalogistSACProcessor,
    install_analogist,
    remove_analogist,
    transformer_layers,
)
from comfyui_analogist.analogist_pixels.layout import ARRANGEMENT_ALIGNED, make_layout  # noqa: E402
from support.diffusers_models import tiny_unet  # noqa: E402

LATENT = 16  # a 128 x 128 px grid of 64 px cells
LAYOUT = make_layout(cell_width=64, cell_height=64)
CONTEXT_DIM = 64


@pytest.fixture(scope="module")
def unet():
    return tiny_unet(seed=0)


@pytest.fixture(autouse=True)
def plain_again(unet):
    yield
    plain_processors(unet)


def unet_inputs(seed=0, batch=2, height=LATENT, width=LATENT):
    gen = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, 9, height, width, generator=gen)
    context = torch.randn(batch, 77, CONTEXT_DIM, generator=gen)
    return sample, torch.tensor(500.0), context


def call(unet, sample, timestep, context):
    with torch.no_grad():
        return unet(sample, timestep, encoder_hidden_states=context).sample


class NaiveProcessor:
    """diffusers' attention with the naive SAC / CAM of the definitions (full logit matrix)."""

    def __init__(self, kind, layout, scale=1.3):
        self.kind, self.cells, self.scale = kind, layout.geometry, scale

    def __call__(
        self,
        attn,
        hidden_states,
        encoder_hidden_states=None,
        attention_mask=None,
        temb=None,
        **kwargs,
    ):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        regions = regions_for_block(self.cells, (LATENT, LATENT), q.shape[1])
        if self.kind == "sac":
            out = sac_reference(q, k, v, attn.heads, regions, self.scale)
        else:
            out = cam_reference(q, k, v, attn.heads, regions)
        return attn.to_out[1](attn.to_out[0](out))


def naive_install(unet, layout, layers, scale=1.3):
    for layer in transformer_layers(unet):
        if layer.index in layers:
            layer.block.attn1.set_processor(NaiveProcessor("sac", layout, scale))
            layer.block.attn2.set_processor(NaiveProcessor("cam", layout))


def plain_processors(unet):
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())


def processors(unet):
    return {
        (layer.index, name): getattr(layer.block, name).processor
        for layer in transformer_layers(unet)
        for name in ("attn1", "attn2")
    }


def test_layers_are_the_papers_16_blocks_in_execution_order(unet):
    layers = transformer_layers(unet)
    assert [layer.comfy_key for layer in layers] == (
        [("input", i, 0) for i in (1, 2, 4, 5, 7, 8)]
        + [("middle", 0, 0)]
        + [("output", i, 0) for i in range(3, 12)]
    )
    assert layers[6].name == "mid_block.attentions.0.transformer_blocks.0"
    assert layers[7].name == "up_blocks.1.attentions.0.transformer_blocks.0"


@pytest.mark.parametrize("aligned", [False, True])
def test_patched_unet_equals_the_naive_definitions_at_the_papers_layers(unet, aligned):
    layout = make_layout(64, 64, arrangement=ARRANGEMENT_ALIGNED) if aligned else LAYOUT
    inputs = unet_inputs(seed=1)
    plain = call(unet, *inputs)

    install_analogist(unet, layout)
    got = call(unet, *inputs)
    remove_analogist(unet)
    naive_install(unet, layout, range(3, 11))
    want = call(unet, *inputs)
    plain_processors(unet)

    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    assert (got - plain).abs().max() > 1e-3 * plain.abs().max(), "the processors changed nothing"


def test_sac_scale_and_layer_ranges_match_the_definitions_on_every_block(unet):
    inputs = unet_inputs(seed=2)
    install_analogist(unet, LAYOUT, sac_scale=2.0, sac_layers=(0, 16), cam_layers=(0, 16))
    got = call(unet, *inputs)
    remove_analogist(unet)
    naive_install(unet, LAYOUT, range(16), scale=2.0)
    want = call(unet, *inputs)
    plain_processors(unet)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_processors_fire_on_exactly_the_chosen_layers_and_leave_the_rest(unet):
    before = processors(unet)
    installation = install_analogist(unet, LAYOUT, sac_layers=(5, 9), cam_layers=(0, 2))
    after = processors(unet)
    call(unet, *unet_inputs())

    assert installation.calls() == {"sac": {5: 1, 6: 1, 7: 1, 8: 1}, "cam": {0: 1, 1: 1}}
    for (index, name), processor in after.items():
        chosen = index in range(5, 9) if name == "attn1" else index in range(0, 2)
        if chosen:
            kind = AnalogistSACProcessor if name == "attn1" else AnalogistCAMProcessor
            assert isinstance(processor, kind) and processor.previous is before[(index, name)]
        else:
            assert processor is before[(index, name)], f"layer {index} {name} was touched"

    installation.remove()
    assert processors(unet) == before


def test_removing_restores_the_plain_unet_exactly(unet):
    inputs = unet_inputs(seed=3)
    plain = call(unet, *inputs)
    install_analogist(unet, LAYOUT)
    install_analogist(unet, LAYOUT, sac_scale=1.5)  # ours replaced by ours: no stacking
    assert remove_analogist(unet) == 16
    assert torch.equal(call(unet, *inputs), plain)


def test_a_cfg_batch_is_edited_entry_by_entry(unet):
    """Uncond and cond (and two analogies) in one batch, as the pipeline runs CFG."""
    sample, timestep, context = unet_inputs(seed=4, batch=4)
    install_analogist(unet, LAYOUT)
    together = call(unet, sample, timestep, context)
    alone = torch.cat(
        [call(unet, sample[i : i + 1], timestep, context[i : i + 1]) for i in range(4)]
    )
    assert (together - alone).abs().max() <= 1e-5 * alone.abs().max()


def test_a_latent_of_another_size_is_a_clear_error(unet):
    install_analogist(unet, LAYOUT)
    sample, timestep, context = unet_inputs(height=24, width=16)
    with pytest.raises(ValueError, match=r"height=128, width=128"):
        call(unet, sample, timestep, context)


def test_bad_layer_ranges_list_the_valid_ones(unet):
    with pytest.raises(ValueError, match=r"sac_layers=\(3, 17\).*valid layers are 0\.\.15"):
        install_analogist(unet, LAYOUT, sac_layers=(3, 17))
    with pytest.raises(ValueError, match=r"cam_layers=.*\(start, end\)"):
        install_analogist(unet, LAYOUT, cam_layers=(3,))


def test_another_owners_processor_is_never_overwritten(unet):
    class OtherPacksProcessor:
        def __call__(self, attn, hidden_states, encoder_hidden_states=None, **kwargs):
            raise AssertionError("not called in this test")

    layer = transformer_layers(unet)[4]
    theirs = OtherPacksProcessor()
    layer.block.attn2.set_processor(theirs)
    before = processors(unet)
    with pytest.raises(
        ValueError, match=r"layer 4 .*attn2.*OtherPacksProcessor.*choose other layers"
    ):
        install_analogist(unet, LAYOUT)
    assert processors(unet) == before, "a refused installation changed processors"
    install_analogist(unet, LAYOUT, cam_layers=(5, 11))  # other layers: fine
    assert layer.block.attn2.processor is theirs
    plain_processors(unet)
