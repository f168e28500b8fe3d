"""Flux.1 Fill (issue 14, experimental): ComfyUI's own Flux class at a mid-size config,
plain vs. SAC+CAM on the default layers and on all blocks, one call at batch 2."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from common import ROOT, Variant, measure, patched, print_table

# Mid-size Flux.1 Fill: the real head dim (128) and rotary axes, a quarter of the width.
FLUX_BENCH = {
    "hidden_size": 768,
    "num_heads": 6,
    "axes_dim": [16, 56, 56],
    "depth": 2,
    "depth_single_blocks": 4,
    "mlp_ratio": 4.0,
    "context_in_dim": 4096,
    "vec_in_dim": 768,
}
FLUX_TEXT_TOKENS = 256  # T5 tokens of a Flux prompt


def run_flux(args, dtype, memory, torch) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from comfyui_analogist.analogist_pixels.layout import make_layout
    from comfyui_analogist.nodes.flux import flux_default_layers
    from support import flux as flux_support

    start = time.perf_counter()
    base = flux_support.tiny_flux_fill_patcher(args.seed, std=0.02, dtype=dtype, **FLUX_BENCH)
    base.model.to(args.device)
    n_blocks = FLUX_BENCH["depth"] + FLUX_BENCH["depth_single_blocks"]
    default = flux_default_layers(n_blocks)
    print(
        f"built a mid-size Flux.1 Fill ({FLUX_BENCH}) in {time.perf_counter() - start:.0f} s",
        flush=True,
    )
    variants_spec = (
        ("plain", None, None),
        (f"SAC+CAM default layers {default[0]}..{default[1] - 1}", *default),
        (f"SAC+CAM all {n_blocks} blocks", 0, n_blocks),
    )
    for grid in args.grids:
        latent = grid // 8
        tokens = (latent // 2) ** 2
        print(
            f"\n## Flux: grid {grid} x {grid} px (cells {grid // 2}, latent {latent} x {latent}, "
            f"{tokens} image + {FLUX_TEXT_TOKENS} text tokens), {args.dtype}, {args.device}"
        )
        layout = make_layout(cell_width=grid // 2, cell_height=grid // 2)
        inputs = {
            key: value.to(args.device, dtype)
            if value.is_floating_point()
            else value.to(args.device)
            for key, value in flux_support.flux_inputs(
                latent, latent, text=FLUX_TEXT_TOKENS, seed=args.seed
            ).items()
        }
        inputs["c_crossattn"] = torch.randn(
            2, FLUX_TEXT_TOKENS, 4096, generator=torch.Generator().manual_seed(1)
        ).to(args.device, dtype)
        inputs["y"] = torch.randn(2, 768, generator=torch.Generator().manual_seed(2)).to(
            args.device, dtype
        )
        variants = []
        for label, first, end in variants_spec:
            model = base if first is None else patched(base, layout, first, end)
            variant = Variant(label, flux_caller(model, inputs, torch), None, None)
            if first is not None:
                edits = model.model_options["transformer_options"]["optimized_attention_override"]
                variant.reset_counts = lambda e=edits: (e.sac.calls.clear(), e.cam.calls.clear())
                variant.counts = lambda e=edits: (
                    f"SAC {sum(e.sac.calls.values())}, CAM {sum(e.cam.calls.values())}"
                )
            variants.append(variant)
        print_table(measure(args, variants, memory, torch), memory.unit)
        if args.device == "cuda":
            torch.cuda.empty_cache()


def flux_caller(model, inputs: dict, torch) -> Callable[[], object]:
    """One CFG-style Flux call (cond + uncond at batch 2) through the model's wrappers."""
    from support import flux as flux_support

    sampling = model.get_model_object("model_sampling")
    sigma = torch.full((2,), float(sampling.percent_to_sigma(0.5)), device=inputs["x"].device)
    options = flux_support.call_options(model, cond_or_uncond=[0, 1], sigmas=sigma)

    def call():
        with torch.inference_mode():
            return model.model.apply_model(
                inputs["x"],
                sigma,
                c_concat=inputs["c_concat"],
                c_crossattn=inputs["c_crossattn"],
                y=inputs["y"],
                guidance=inputs["guidance"],
                transformer_options=options,
            )

    return call
