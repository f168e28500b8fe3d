"""Cost of one MimicBrush sampling step against the imitative UNet alone (issue 20).

    python benchmarks/mimicbrush.py                       # CPU, 256 px, fp32, SD1.5 widths
    python benchmarks/mimicbrush.py --device cuda --size 512 --dtype fp16

Builds both UNets at SD1.5's full widths with random weights (ComfyUI's own classes, the
config in ``tests/support/sd15.py``; 13 input channels for the imitative one, 4 for the
reference one), loads them through ``analogist_mimicbrush.unet`` into ComfyUI models, and
times one CFG step (one UNet call at batch 2, cond + uncond, the way ComfyUI's sampler makes
it: model function wrapper + ``apply_model``):

* plain: the imitative UNet alone;
* MimicBrush: the patched clone (the reference UNet on the cond row only, stopping after its
  last fusion block, then the imitative UNet with the mixed self-attention).

The expected extra cost is one reference pass at batch 1 (about half a CFG step) and the
keys/values of the reference tokens in 10 blocks; anything beyond that is overhead.
Median wall time, peak memory (CUDA allocator, or VmHWM on CPU, as in attention.py) and the
ratios are printed. Timed calls alternate between the two models.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import common as helpers  # this folder's shared set-up (scripts run from it)

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--size", type=int, default=None, help="image side in px; default 256 on CPU, 512 on CUDA"
    )
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-repeats", type=int, default=1)
    args = parser.parse_args(argv)
    size = args.size or (512 if args.device == "cuda" else 256)
    dtype_name = args.dtype or ("fp16" if args.device == "cuda" else "fp32")

    helpers.configure_comfy(args.device, "pytorch")
    helpers.register_pack()
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from comfyui_analogist.analogist_mimicbrush.reference_attention import patch_model
    from comfyui_analogist.analogist_mimicbrush.unet import build_unet_patcher, reference_unet_tail
    from support.sd15 import SD15_INPAINT_UNET, build_unet

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype_name]
    device = torch.device(args.device)
    cfg_i = {**SD15_INPAINT_UNET, "in_channels": 13}
    cfg_r = {**SD15_INPAINT_UNET, "in_channels": 4}
    imitative = build_unet_patcher(build_unet(cfg_i, 0).state_dict(), cfg_i, "bench", dtype=dtype)
    reference = build_unet_patcher(
        build_unet(cfg_r, 1).state_dict(),
        cfg_r,
        "bench",
        zero_fill=reference_unet_tail(cfg_r),
        dtype=dtype,
    )
    gc.collect()  # the random source UNets: 3.4 GB each in fp32, not kept
    latent = size // 8
    gen = torch.Generator().manual_seed(0)
    ctx = torch.randn(2, 257, cfg_i["context_dim"], generator=gen)
    patched = patch_model(
        imitative, reference, torch.randn(1, 4, latent, latent, generator=gen), ctx[1:2]
    )

    import comfy.model_management as mm

    mm.load_models_gpu([imitative, reference])
    x = torch.randn(2, 4, latent, latent, generator=gen).to(device)
    concat = torch.randn(2, 9, latent, latent, generator=gen).to(device)
    sigma = imitative.model.model_sampling.sigmas[500].reshape(1).expand(2).clone().to(device)

    def caller(model):
        c = {
            "c_concat": concat,
            "c_crossattn": ctx.to(device),
            "transformer_options": {
                **model.model_options["transformer_options"],
                "cond_or_uncond": [0, 1],
            },
        }
        wrapper = model.model_options.get("model_function_wrapper")

        def call():
            with torch.no_grad():
                if wrapper is None:
                    return model.model.apply_model(x, sigma, **c)
                return wrapper(
                    model.model.apply_model,
                    {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": [0, 1]},
                )

        return call

    # The claim to check: the reference UNet runs on the cond row only (batch 1 of the CFG
    # batch 2), never on the uncond half the official code computes and discards.
    reference_rows: list[int] = []
    reference.model.diffusion_model.register_forward_pre_hook(
        lambda module, args: reference_rows.append(int(args[0].shape[0]))
    )
    calls = {
        "imitative UNet alone": caller(imitative),
        "MimicBrush (reference + imitative)": caller(patched),
    }
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for call in calls.values():  # warm-up
        call()
    times = {k: [] for k in calls}
    for _ in range(args.repeats):
        for label, call in calls.items():
            sync()
            t0 = time.perf_counter()
            call()
            sync()
            times[label].append(time.perf_counter() - t0)
    memory = helpers.CudaMemory(torch) if args.device == "cuda" else helpers.CpuMemory()
    memory.prepare()
    peaks = {}
    for label, call in calls.items():
        best = 0
        for _ in range(args.memory_repeats):
            before = memory.start()
            call()
            best = max(best, memory.peak() - before)
        peaks[label] = best

    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    threads = torch.get_num_threads()
    print(
        f"one CFG step (batch 2), {size} px, {dtype_name}, {name} ({threads} threads), "
        f"torch {torch.__version__}, pytorch attention"
    )
    calls_made = 1 + args.repeats + args.memory_repeats  # warm-up, timed, memory
    assert reference_rows == [1] * calls_made, reference_rows
    print(
        f"  reference UNet calls: {len(reference_rows)} for {calls_made} MimicBrush steps, "
        f"rows per call {sorted(set(reference_rows))} (cond only; the uncond half never runs)"
    )
    base_t = statistics.median(times["imitative UNet alone"])
    base_m = peaks["imitative UNet alone"]
    for label in calls:
        t, m = statistics.median(times[label]), peaks[label]
        print(
            f"  {label:38s} {t * 1000:9.1f} ms  x{t / base_t:.2f}   peak +{m / 2**20:8.1f} MiB  "
            f"x{m / max(base_m, 1):.2f}"
        )


if __name__ == "__main__":
    main()
