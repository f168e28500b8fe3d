"""Time and peak memory of one SD1.5-inpainting UNet call, plain vs. SAC+CAM (issue 3).

    python benchmarks/attention.py                      # CPU, 512 px grid, fp32
    python benchmarks/attention.py --device cuda        # 512, 1024, 2048 px grids, fp16
    python benchmarks/attention.py --grid 512 --pairs 1,2,3 --host comfyui
                                                        # K example pairs (issue 12)
    python benchmarks/attention.py --model flux         # a mid-size random Flux.1 Fill (issue 14)

Builds the full-size SD1.5 inpainting UNet (random weights, ComfyUI's own classes, see
``tests/support/sd15.py``) in a ``ModelPatcher``, patches clones of it through the real
``AnalogistSACPatch`` and ``AnalogistCAMPatch`` nodes, and times one UNet call at batch 2
(cond + uncond, as CFG runs it) for three models: plain, SAC+CAM on the paper's layers
(3..10) and SAC+CAM on all 16 transformer blocks. Timed calls of the three models are
interleaved, so a load change on the machine hits all of them alike; the table gives the
median time, and the ratios to the plain model measured in the same run.

Peak memory is measured in separate calls after the timed ones. On CUDA: the caching
allocator's counters (``max_memory_allocated``). On CPU there is no allocator counter, so
the kernel's peak-RSS counter is reset before each call (``5`` into
``/proc/self/clear_refs``) and ``VmHWM`` read after it. glibc keeps freed blocks below its
(dynamic, up to 32 MiB) mmap threshold in the heap, where a later call reuses them without
raising RSS, so before the memory calls the script sets that threshold to 64 KiB: every
large tensor is then mapped and unmapped, and each call's peak is its own. That costs page
faults, which is why the timed calls come first, with glibc as ComfyUI runs it.

``--model flux`` does the same for Flux.1 Fill (experimental): ComfyUI's own Flux class at
a mid-size config (``FLUX_BENCH``: Flux's real head dim 128 and rotary axes, hidden 768 =
6 heads, 2 double + 4 single blocks, 256 T5 tokens of width 4096) with random weights; plain
vs. SAC+CAM on the default layers (the paper's share of the depth: 1..3 of 6) vs. all 6
blocks, one model call at batch 2.

This is a script, not a test: pytest only collects ``tests/``.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

from common import (
    ATTENTION_FLAGS,
    CUDA_GRIDS,
    DTYPES,
    CpuMemory,
    CudaMemory,
    comfy_version,
    configure_comfy,
    machine_description,
    print_table,
    register_pack,
)
from diffusers_unet import build_diffusers_unet, diffusers_available, run_grid_diffusers
from flux import run_flux
from unet import build_model, run_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--grid",
        default=None,
        help="grid side in px (cell = grid/2), or 'all' for 512, 1024, 2048. Default: 512 on CPU, all on CUDA.",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="Default: fp32 on CPU, fp16 on CUDA."
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed calls per model (median reported); default 5"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed calls per model first; default 1"
    )
    parser.add_argument(
        "--memory-repeats",
        type=int,
        default=2,
        help="calls per model for peak memory, after the timed ones; default 2",
    )
    parser.add_argument(
        "--attention",
        choices=tuple(ATTENTION_FLAGS),
        default="pytorch",
        help="ComfyUI's attention backend for the plain attention (default pytorch: SDPA, the "
        "kernel SAC/CAM call, so plain and patched use the same kernels). 'comfy-default' is "
        "ComfyUI's own choice: sub-quadratic on CPU, SDPA (or xformers) on CUDA.",
    )
    parser.add_argument(
        "--host",
        choices=("both", "comfyui", "diffusers"),
        default="both",
        help="which UNet to measure: ComfyUI's with the nodes' patches, diffusers' with "
        "analogist_diffusers' processors, or both (default; diffusers only where installed)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--pairs",
        default="1",
        help="example pairs K per grid, comma separated (e.g. 1,2,3): the grid gets K+1 rows "
        "of cells (cell = grid/2), and each K is timed against plain attention on that same "
        "grid. Default 1 (the paper's 2x2 grid). ComfyUI host only for K > 1.",
    )
    parser.add_argument(
        "--paper-layers-only",
        action="store_true",
        help="measure plain and SAC+CAM on the paper's layers only (skip all-16-blocks): "
        "a shorter run, e.g. for --pairs on a CPU",
    )
    parser.add_argument(
        "--model",
        choices=("sd15", "flux"),
        default="sd15",
        help="sd15: the full SD1.5 inpainting UNet (default); flux: a mid-size random Flux.1 "
        "Fill through ComfyUI's attention override (ComfyUI 0.30.0 host; --host is ignored)",
    )
    args = parser.parse_args(argv)
    try:
        args.pairs = [int(k) for k in args.pairs.split(",")]
    except ValueError:
        parser.error(f"--pairs {args.pairs!r}: give whole numbers, e.g. 1,2,3")
    if any(not 1 <= k <= 4 for k in args.pairs):
        parser.error(f"--pairs {args.pairs}: each K must be 1..4 (the grid nodes' limit)")
    if args.repeats < 1 or args.memory_repeats < 1 or args.warmup < 0:
        parser.error("--repeats and --memory-repeats must be >= 1, --warmup >= 0")
    args.dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
    grid = args.grid or ("all" if args.device == "cuda" else "512")
    if grid == "all":
        args.grids = list(CUDA_GRIDS)
    else:
        try:
            args.grids = [int(grid)]
        except ValueError:
            parser.error(f"--grid {grid!r}: give a size in px (a multiple of 128) or 'all'")
    bad = [g for g in args.grids if g <= 0 or g % 128]
    if bad:
        parser.error(
            f"--grid {bad[0]}: cells (grid/2) must be multiples of 64 px, so the grid a multiple of 128"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch sees no CUDA device", file=sys.stderr)
        return 2
    configure_comfy(args.device, args.attention)
    register_pack()

    import importlib.metadata

    import comfy.ldm.modules.attention as comfy_attention

    dtype = getattr(torch, DTYPES[args.dtype])
    memory = CudaMemory(torch) if args.device == "cuda" else CpuMemory()

    print(f"machine: {machine_description(args.device, torch)}")
    print(f"torch {torch.__version__}, ComfyUI {comfy_version()}")
    print(
        f"ComfyUI attention backend: {comfy_attention.optimized_attention.__name__} (--attention {args.attention})"
    )
    print(
        f"dtype {args.dtype}, batch 2 (cond + uncond); per model {args.warmup} warm-up, "
        f"{args.repeats} timed (median), {args.memory_repeats} memory (max) calls"
    )
    if args.device == "cpu":
        print(
            "memory: peak RSS via /proc/self/clear_refs + VmHWM, glibc mmap threshold 64 KiB in the memory calls"
        )
    else:
        print("memory: torch.cuda.max_memory_allocated")

    if args.model == "flux":
        run_flux(args, dtype, memory, torch)
        return 0

    if args.host in ("both", "comfyui"):
        start = time.perf_counter()
        base = build_model(args.seed, dtype, args.device)
        print(
            f"built the full SD1.5 inpainting UNet in {time.perf_counter() - start:.0f} s",
            flush=True,
        )

        for grid in args.grids:
            for pairs in args.pairs:
                height = grid // 2 * (pairs + 1)
                shot = "" if pairs == 1 and args.pairs == [1] else f"K = {pairs} example pair(s): "
                print(
                    f"\n## {shot}grid {grid} x {height} px (cells {grid // 2}, latent "
                    f"{grid // 8} x {height // 8}), {args.dtype}, {args.device}"
                )
                results = run_grid(args, base, grid, memory, torch, pairs)
                print_table(results, memory.unit)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
        del base
        gc.collect()

    if args.host in ("both", "diffusers") and args.pairs != [1]:
        print(
            "\n--pairs other than 1: the diffusers UNet is benchmarked with the paper's 2x2 grid only"
        )
    if args.host in ("both", "diffusers"):
        if not diffusers_available():
            print(
                "\ndiffusers is not installed: the diffusers UNet is skipped (pip install diffusers)"
            )
            return 0 if args.host == "both" else 2
        print(
            f"\ndiffusers {importlib.metadata.version('diffusers')}: UNet2DConditionModel, "
            f"plain = AttnProcessor2_0 (SDPA)"
        )
        start = time.perf_counter()
        unet = build_diffusers_unet(dtype, args.device)
        print(
            f"built the full SD1.5 inpainting UNet2DConditionModel in {time.perf_counter() - start:.0f} s",
            flush=True,
        )
        for grid in args.grids:
            print(
                f"\n## diffusers: grid {grid} x {grid} px (cells {grid // 2}, latent "
                f"{grid // 8} x {grid // 8}), {args.dtype}, {args.device}"
            )
            results = run_grid_diffusers(args, unet, grid, memory, torch)
            print_table(results, memory.unit)
            if args.device == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
