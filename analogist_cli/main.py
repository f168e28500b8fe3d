"""``python -m analogist run ...``: solve A : A' :: B : ? with a shipped workflow, headless."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "workflows" / "images"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m analogist",
        description="Analogist for ComfyUI: visual image analogies A : A' :: B : ? without the UI.",
    )
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run a shipped workflow on your images and save B'",
        description="Run workflows/analogist_manual_prompt.json (or analogist.json with "
        "--workflow vlm) on A, A', B and save B' (plus the A | A' | B | B' strip) into --out. "
        "Without --server it starts the ComfyUI installed in this Python; with --server it "
        "uses running ComfyUI servers and spreads a folder of B images over them.",
    )
    run.add_argument(
        "--a",
        type=Path,
        default=EXAMPLES / "analogist_example_a.png",
        help="A, the example before the change (default: the pack's example)",
    )
    run.add_argument(
        "--a-prime",
        type=Path,
        default=EXAMPLES / "analogist_example_a_prime.png",
        help="A', the example after the change (default: the pack's example)",
    )
    run.add_argument(
        "--b",
        type=Path,
        default=EXAMPLES / "analogist_example_b.png",
        help="B, the image to change; or a folder of B images (default: the pack's example)",
    )
    run.add_argument(
        "--example",
        nargs=2,
        action="append",
        default=[],
        type=Path,
        metavar=("A", "A_PRIME"),
        help="one more example pair after --a/--a-prime (repeatable, up to 3 more): "
        "each is a grid row, and B' copies the change all pairs share",
    )
    run.add_argument(
        "--checkpoint",
        help="SD1.5 inpainting checkpoint: a file path (default: the "
        "one in scripts/run.sh's ComfyUI folder, ~/.cache/analogist-comfyui/models/"
        "checkpoints); with --server, the name the servers list",
    )
    run.add_argument(
        "--out",
        type=Path,
        default=Path("analogist-results"),
        help="folder for the results (default: ./analogist-results)",
    )
    run.add_argument(
        "--workflow",
        choices=("manual", "vlm"),
        default="manual",
        help="manual: you give the B' prompt (default, offline); vlm: a vision model writes it",
    )
    run.add_argument(
        "--prompt",
        help="B' prompt for the manual workflow; keep the paper's "
        "', best quality, extremely detailed' at the end (default: the workflow's)",
    )
    run.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="URL",
        help="a running ComfyUI with this pack (repeat for several)",
    )
    run.add_argument("--steps", type=int, help="sampling steps (paper: 50)")
    run.add_argument("--cell", type=int, help="grid cell size in px, multiple of 64 (paper: 256)")
    run.add_argument("--seed", type=int, help="sampler seed (default 0)")
    run.add_argument("--denoise", type=float, help="paper: 0.98; deblur/denoise tasks: 0.7")
    run.add_argument(
        "--vlm-base-url",
        help="OpenAI-compatible server for --workflow vlm, e.g. "
        "http://127.0.0.1:11434/v1 (Ollama); default OpenAI (OPENAI_API_KEY in the "
        "server's environment)",
    )
    run.add_argument("--vlm-model", help="vision model name for --workflow vlm (default gpt-4o)")
    run.add_argument(
        "--candidates",
        type=int,
        metavar="N",
        help="sample N B' (2-64, one batch) and keep the best by the paper's CLIP "
        "direction score (workflows/analogist_best_of_n.json); needs --clip-vision. "
        "All N are saved best first as <name>_candidate_rankK.png with <name>_scores.txt",
    )
    run.add_argument(
        "--clip-vision",
        metavar="PATH",
        help="CLIP vision model file that scores the candidates (e.g. the ViT-L/14 or "
        "ViT-H/14 image encoder IPAdapter uses); with --server, its name in the "
        "servers' models/clip_vision",
    )
    run.add_argument(
        "--b-region",
        type=Path,
        metavar="MASK.png",
        help="region of interest on B: an image at B's size, white where B may "
        "change (red channel read); the rest of B comes back unchanged",
    )
    add_score_command(commands)
    add_reversion_command(commands)
    from .mimicbrush import add_mimicbrush_command  # cheap: no torch at import

    add_mimicbrush_command(commands)
    return top


def add_reversion_command(commands) -> None:
    from .reversion import add_reversion_command as add  # cheap: no torch at import

    add(commands)


def add_score_command(commands) -> None:
    score = commands.add_parser(
        "score",
        help="the paper's CLIP direction metric on a folder of results",
        description="Score B' results the way the paper's evaluation does: cos(E(A') - E(A), "
        "E(B') - E(B)) with E = transformers' CLIPModel.get_image_features, the mean over the "
        "samples of each analogy, then per task (a folder under RESULTS) and overall. Prints a "
        "table and writes every analogy's score as CSV.",
    )
    score.add_argument(
        "results",
        type=Path,
        help="the --out folder of `run` (files <name>_a, "
        "<name>_a_prime, <name>_b, <name>_b_prime[_N]), or a folder of such folders, one per task",
    )
    score.add_argument(
        "--clip",
        type=Path,
        required=True,
        metavar="DIR",
        help="local folder of a CLIP model in the Hugging Face layout (paper: "
        "openai/clip-vit-base-patch16); nothing is downloaded",
    )
    score.add_argument(
        "--csv",
        type=Path,
        help="where to write the CSV (default: RESULTS/clip_direction_scores.csv)",
    )
    score.add_argument("--device", help="torch device (default: cuda if available, else cpu)")


def run_score(args) -> int:
    from .score import ScoreError, main_score

    try:
        return main_score(args.results, args.clip, args.csv, args.device)
    except ScoreError as exc:
        print(f"analogist: error: {exc}", file=sys.stderr)
        return 2


def check_finite(args) -> None:
    """NaN and infinity pass argparse's ``float``; refuse them before anything runs (they
    otherwise fail deep inside a sampler, or silently become something else)."""
    import math

    from .inputs import InputError

    for name, value in vars(args).items():
        if isinstance(value, float) and not math.isfinite(value):
            flag = "--" + name.replace("_", "-")
            raise InputError(f"{flag} must be a number, got {value}")


def printable_lines(text: object) -> str:
    """Each line of ``text`` with its control characters escaped (see comfy_api.printable)."""
    from .comfy_api import printable

    return "\n".join(printable(line) for line in str(text).split("\n"))


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: unwinds the run like Ctrl-C, so every clean-up runs
    (the embedded ComfyUI is stopped and its folder removed, queued jobs are cancelled)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def stop_on_signals() -> dict:
    """Turn the first SIGINT/SIGTERM/SIGHUP into :class:`Stopped`; later ones are ignored
    so they cannot cut the clean-up short. Returns the previous handlers."""
    fired: list[int] = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Stopped(signum)

    previous = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            previous[sig] = signal.signal(sig, handler)
    return previous


def run_guarded(body: Callable[[], int], errors: tuple[type[BaseException], ...]) -> int:
    """Run a command's body the way every command ends: a known error (``errors``) or an
    ``OSError`` (a full disk, a vanished folder) is one escaped line and exit 2; a stop
    signal unwinds the clean-up and exits 128 + its number; Ctrl-C exits 130."""
    previous = stop_on_signals() if threading.current_thread() is threading.main_thread() else {}
    try:
        return body()
    except errors as exc:
        print(f"analogist: error: {printable_lines(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        text = exc.strerror and f"{exc.strerror}: {exc.filename}" or exc
        print(f"analogist: error: {printable_lines(text)}", file=sys.stderr)
        return 2
    except Stopped as exc:
        name = signal.Signals(exc.signum).name
        print(
            f"analogist: stopped by {name}; ComfyUI work of this run was stopped", file=sys.stderr
        )
        return 128 + exc.signum
    except KeyboardInterrupt:
        print("analogist: interrupted", file=sys.stderr)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "score":
        return run_score(args)
    if args.command == "mimicbrush":
        from .mimicbrush import main_mimicbrush

        return main_mimicbrush(args)
    if args.command == "reversion":
        from .reversion import main_reversion

        return main_reversion(args)
    from .checkpoints import CheckpointError, checkpoint_for
    from .comfy_api import ServerError, check_url
    from .inputs import (
        InputError,
        Settings,
        b_images,
        check_b_region,
        check_candidates,
        check_image,
        check_out,
        example_pairs,
    )
    from .runner import main_run
    from .workflow_format import WorkflowError

    def run() -> int:
        servers = [check_url(url) for url in args.server]
        check_finite(args)
        if args.steps is not None and args.steps < 1:
            raise InputError(f"--steps must be at least 1, got {args.steps}")
        if args.cell is not None and (args.cell < 64 or args.cell % 64):
            raise InputError(
                f"--cell must be a multiple of 64 (64, 128, 256, 512...), got {args.cell}"
            )
        if args.prompt is not None and args.workflow != "manual":
            raise InputError("--prompt goes with --workflow manual (the vlm workflow asks a model)")
        settings = Settings(
            a=check_image(args.a, "--a"),
            a_prime=check_image(args.a_prime, "--a-prime"),
            examples=example_pairs(args.example),
            b=b_images(args.b),
            out=check_out(args.out),
            checkpoint=checkpoint_for(args.checkpoint, servers),
            workflow=args.workflow,
            prompt=args.prompt,
            steps=args.steps,
            cell=args.cell,
            seed=args.seed,
            denoise=args.denoise,
            vlm_base_url=args.vlm_base_url,
            vlm_model=args.vlm_model,
            candidates=args.candidates,
            clip_vision=check_candidates(args.candidates, args.clip_vision, args.workflow, servers),
        )
        settings.b_region = check_b_region(args.b_region, settings.b)
        return main_run(settings, servers)

    return run_guarded(run, (InputError, CheckpointError, ServerError, WorkflowError))


if __name__ == "__main__":
    raise SystemExit(main())
