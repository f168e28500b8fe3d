"""Cost of ReVersion training: one micro-step measured on this machine, the full recipe estimated.

    python benchmarks/reversion.py                    # CPU, full-size SD1.5, 64 px, batch 1
    python benchmarks/reversion.py --resolution 128 --batch 2

Builds a random full-size SD1.5 (ComfyUI's own UNetModel, CLIP text model and VAE, see
``tests/support/sd15.py``) and times ``relation_loss`` + backward for one micro-step of
the pack's trainer (``analogist_reversion.loss``), with ComfyUI's PyTorch attention, fp32.
Peak memory is the process's peak RSS (``VmHWM``) over the timed micro-steps.

The full-recipe number for a GPU is an ESTIMATE, not a measurement: the script counts the
floating-point operations of one paper-size micro-step (512 px, batch 2) with
``torch.utils.flop_counter`` on the meta device, multiplies by 4 micro-steps x 3000 steps,
and divides by an assumed sustained fp32 throughput (``--gpu-tflops``; the official recipe
runs fp32 with TF32 off). Real runs add data loading, the VAE encodes and kernel overheads.

This is a script, not a test: pytest only collects ``tests/``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from common import configure_comfy, register_pack

ROOT = Path(__file__).resolve().parents[1]


def setup() -> None:
    """ComfyUI on the CPU with PyTorch attention, and the pack imported the one way
    (``analogist.import_pack``, through ``common.register_pack``)."""
    configure_comfy("cpu", "pytorch")
    register_pack()
    sys.path.insert(0, str(ROOT / "tests"))


def peak_rss_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def build(device: str):
    import comfy.sd1_clip
    import torch
    from comfyui_analogist.analogist_reversion.comfy_parts import (
        parts_from_modules,
        tokenizer_folder,
    )
    from support.sd15 import SD15_INPAINT_UNET, build_unet, randomize_

    if device == "meta":
        from comfy import ops
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

        with torch.device("meta"):
            unet = UNetModel(
                **{**SD15_INPAINT_UNET, "in_channels": 4},
                device="meta",
                operations=ops.disable_weight_init,
            )
            clip = comfy.sd1_clip.SDClipModel(device="meta", dtype=torch.float32)
    else:
        unet = build_unet({**SD15_INPAINT_UNET, "in_channels": 4}, seed=0)
        clip = comfy.sd1_clip.SDClipModel(dtype=torch.float32)
        randomize_(clip.transformer, seed=2)
    for module in (unet, clip):
        module.requires_grad_(False)
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_folder())
    return parts_from_modules(unet, clip.transformer.text_model, tokenizer, torch.float32)


def micro_step(parts, r, batch: int, resolution: int, device: str, seed: int = 0):
    import torch
    from comfyui_analogist.analogist_reversion.loss import relation_loss

    gen = torch.Generator().manual_seed(seed)
    side = resolution // 8
    shape = (batch, 4, side, side)
    latents = torch.randn(shape, generator=gen).to(device)
    noise = torch.randn(shape, generator=gen).to(device)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    ids = torch.tensor([parts.tokens.prompt("a cat {} a big stone")] * batch)
    pos = torch.tensor([parts.tokens.positives(["on", "inside", "over", "beside"])] * batch)
    terms = relation_loss(parts, r, latents, noise, t, ids, pos)
    (terms.total / 4).backward()
    return terms


def count_paper_flops() -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    parts = build("meta")
    r = torch.nn.Parameter(torch.zeros(768, device="meta"))
    with FlopCounterMode(display=False) as counter:
        micro_step(parts, r, batch=2, resolution=512, device="meta")
    return float(counter.get_total_flops())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2, help="timed micro-steps (median)")
    ap.add_argument("--gpu-tflops", type=float, default=30.0,
                    help="assumed sustained fp32 TFLOP/s for the estimate (default 30: about half "
                    "of an H100 SXM's 67 fp32 peak; an A100 peaks at 19.5)")  # fmt: skip
    ap.add_argument("--skip-measure", action="store_true", help="only the FLOP-based estimate")
    args = ap.parse_args(argv)
    setup()
    import torch

    torch.manual_seed(0)
    if not args.skip_measure:
        parts = build("cpu")
        r = torch.nn.Parameter(parts.token_table[parts.tokens.word_id("and")].detach().clone())
        micro_step(parts, r, args.batch, args.resolution, "cpu")  # warm-up
        times = []
        peak_rss_reset()
        for i in range(args.repeats):
            start = time.perf_counter()
            micro_step(parts, r, args.batch, args.resolution, "cpu", seed=i + 1)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(
            f"CPU ({os.cpu_count()} cores visible), full-size SD1.5 fp32, {args.resolution} px, batch {args.batch}:"
        )
        print(
            f"  one micro-step (text encoder + UNet forward and backward to <R>): {median:.2f} "
            f"s (median of {len(times)})"
        )
        print(f"  peak RSS: {peak_rss() / 2**30:.2f} GiB")
    flops = count_paper_flops()
    total = flops * 4 * 3000
    seconds = total / (args.gpu_tflops * 1e12)
    print("Paper recipe (512 px, batch 2, accumulation 4, 3000 steps, fp32):")
    print(
        f"  counted FLOPs per micro-step: {flops / 1e12:.2f} TFLOP; whole run: {total / 1e15:.1f} PFLOP"
    )
    print(f"  ESTIMATE at {args.gpu_tflops:g} sustained fp32 TFLOP/s: {seconds / 3600:.1f} h of GPU time "
          "(not measured; real runs are slower by their overheads)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
