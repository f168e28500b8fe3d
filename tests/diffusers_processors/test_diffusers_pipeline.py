"""run_analogy on a whole (tiny, random) StableDiffusionInpaintPipeline."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers.models", reason="diffusers is not installed in this Python")
pytest.importorskip("transformers", reason="the pipeline's text encoder needs transformers")

from comfyui_analogist.analogist_diffusers import (  # noqa: E402
    AnalogistCAMProcessor,
    AnalogistSACProcessor,
    run_analogy,
    transformer_layers,
)
from support.diffusers_models import tiny_inpaint_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    return tiny_inpaint_pipeline(seed=0)


def image(width, height, color):
    return Image.new("RGB", (width, height), color)


def test_run_analogy_samples_with_the_edits_and_returns_b_prime_at_bs_size(pipe):
    steps = []  # what the UNet and scheduler were at the end of each step

    def during_sampling(pipeline, step, timestep, callback_kwargs):
        layers = transformer_layers(pipeline.unet)
        steps.append(
            {
                "sac": {
                    x.index
                    for x in layers
                    if isinstance(x.block.attn1.processor, AnalogistSACProcessor)
                },
                "cam": {
                    x.index
                    for x in layers
                    if isinstance(x.block.attn2.processor, AnalogistCAMProcessor)
                },
                "calls": {getattr(x.block.attn1.processor, "calls", None) for x in layers[3:11]},
                "scheduler": type(pipeline.scheduler).__name__,
            }
        )
        return callback_kwargs

    scheduler = pipe.scheduler
    before = {name: type(p) for name, p in pipe.unet.attn_processors.items()}
    results = run_analogy(
        pipe,
        image(90, 60, (230, 120, 20)),
        image(90, 60, (20, 20, 20)),
        image(100, 70, (20, 160, 40)),
        "a line drawing",
        cell_size=64,
        num_inference_steps=3,
        num_images=2,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=during_sampling,
    )

    assert len(results) == 2
    assert all(
        isinstance(r, Image.Image) and r.size == (100, 70) and r.mode == "RGB" for r in results
    )
    assert len(steps) == 2  # 3 steps at strength 0.98
    assert steps[0]["sac"] == steps[0]["cam"] == set(range(3, 11))  # the paper's layers
    # CFG: one UNet call of batch 4 (2 images x uncond/cond) per step
    assert [step["calls"] for step in steps] == [{1}, {2}]
    assert {step["scheduler"] for step in steps} == {"DDIMScheduler"}
    # the pipeline is left as it was
    assert pipe.scheduler is scheduler
    assert {name: type(p) for name, p in pipe.unet.attn_processors.items()} == before
    assert not any(
        isinstance(p, (AnalogistSACProcessor, AnalogistCAMProcessor))
        for p in pipe.unet.attn_processors.values()
    )


def test_run_analogy_is_reproducible_and_the_edits_change_b_prime(pipe):
    a, a_prime, b = (
        image(64, 64, (200, 40, 40)),
        image(64, 64, (40, 40, 200)),
        image(64, 64, (40, 200, 40)),
    )

    def run(**options):
        out = run_analogy(
            pipe,
            a,
            a_prime,
            b,
            "x",
            cell_size=64,
            num_inference_steps=2,
            generator=torch.Generator().manual_seed(3),
            **options,
        )
        return torch.tensor(list(out[0].getdata()), dtype=torch.float32)

    first = run()
    assert torch.equal(first, run())
    assert not torch.equal(first, run(sac_layers=None, cam_layers=None, sac_scale=1.0))


def test_a_missing_image_file_names_the_input(pipe, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"a_prime: no image file"):
        run_analogy(
            pipe,
            image(64, 64, "red"),
            tmp_path / "missing.png",
            image(64, 64, "red"),
            "x",
            cell_size=64,
        )
