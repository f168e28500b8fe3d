"""``python -m analogist mimicbrush --target T --mask M --reference R``: MimicBrush headless.

Runs the shipped ``workflows/mimicbrush.json`` (``mimicbrush_texture.json`` with
``--shape-control``) the way ``run`` runs the Analogist graphs: on its own embedded ComfyUI
(the model files linked into its model folders) or on a running one (``--server``, the
files named as that server lists them). The target and reference are uploaded as Load
Image reads them (:mod:`.image_files`); the mask, an image at the target's size (white =
repaint, red channel read), through Load Image (as Mask) into MimicBrush Apply and Paste.
The edited target is saved into ``--out`` as ``<target>_mimicbrush.png`` (one per sample).
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..analogist_pixels.image_files import check_image_file
from .comfy_api import ComfyClient, ServerError, check_url
from .inputs import InputError, check_image, check_out, make_out
from .workflow_format import WorkflowError, nodes_of_type, set_widget, ui_to_api

PACK_ROOT = Path(__file__).resolve().parents[1]
WORKFLOW_FILES = {
    False: PACK_ROOT / "workflows" / "mimicbrush.json",
    True: PACK_ROOT / "workflows" / "mimicbrush_texture.json",
}
# scripts/run.sh's ComfyUI keeps its models here; the default place to look for the files.
MODELS_HOME = Path("~/.cache/analogist-comfyui/models").expanduser()
# option -> (model folder, the file's usual name, what it is and where it comes from)
MODEL_FILES = {
    "mimicbrush": ("mimicbrush", "mimicbrush.bin", "MimicBrush's weights (ali-vilab/MimicBrush)"),
    "depth_model": (
        "depth_anything",
        "depth_anything_vitb14.pth",
        "Depth Anything V1 ViT-B/14 (LiheYoung/Depth-Anything)",
    ),
    "vae": (
        "vae",
        "vae-ft-mse-840000-ema-pruned.safetensors",
        "the SD1.5 VAE sd-vae-ft-mse (stabilityai/sd-vae-ft-mse-original)",
    ),
}
NEEDED_NODES = (
    "AnalogistMimicBrushLoader",
    "AnalogistMimicBrushApply",
    "AnalogistMimicBrushPaste",
    "AnalogistDDIMSigmas",
    "AnalogistDDIMSampler",
    "SamplerCustom",
    "VAELoader",
    "VAEDecode",
    "LoadImage",
    "LoadImageMask",
    "SaveImage",
)


@dataclass
class MimicBrushSettings:
    target: Path
    mask: Path
    reference: Path
    out: Path
    shape_control: bool
    models: dict[str, str]  # option -> the name the server lists (depth: "folder/name")
    files: dict[str, Path]  # embedded: model folder -> the file linked into it
    steps: int | None = None
    seed: int | None = None
    cfg: float | None = None
    samples: int | None = None
    crop_margin: float | None = None  # --crop-around-mask: the margin; None: whole target


def add_mimicbrush_command(commands) -> None:
    p = commands.add_parser(
        "mimicbrush",
        help="repaint a masked region of a target to imitate a reference (MimicBrush)",
        description="Run workflows/mimicbrush.json (mimicbrush_texture.json with "
        "--shape-control) on your target, mask and reference and save the edited target into "
        "--out. Without --server it starts the ComfyUI installed in this Python with the "
        "model files linked in; with --server it uses a running ComfyUI that has them.",
    )
    p.add_argument("--target", type=Path, required=True, help="the image to edit")
    p.add_argument(
        "--mask",
        type=Path,
        required=True,
        help="an image at the target's size, white where to repaint (red channel read)",
    )
    p.add_argument("--reference", type=Path, required=True, help="the image to imitate")
    p.add_argument(
        "--shape-control",
        action="store_true",
        help="keep the target's shape (depth) in the region; take only the texture",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("mimicbrush-results"),
        help="folder for the results (default: ./mimicbrush-results)",
    )
    for option, (folder, name, what) in MODEL_FILES.items():
        p.add_argument(
            "--" + option.replace("_", "-"),
            metavar="FILE",
            help=f"{what}: a file path (default: {MODELS_HOME}/{folder}/{name}); with "
            f"--server, its name in the server's models/{folder} (default {name})",
        )
    p.add_argument(
        "--server", metavar="URL", help="a running ComfyUI with this pack and the model files"
    )
    p.add_argument("--steps", type=int, help="DDIM steps (official: 50)")
    p.add_argument("--seed", type=int, help="noise seed (default 0)")
    p.add_argument("--cfg", type=float, help="guidance scale (official: 5)")
    p.add_argument("--samples", type=int, help="results per target (default 1)")
    p.add_argument(
        "--crop-around-mask",
        type=float,
        nargs="?",
        const=0.25,
        metavar="MARGIN",
        help="for targets larger than 512 px: work on a crop around the mask, MARGIN of the "
        "mask's size around it (default 0.25)",
    )


def _model_file(option: str, value: str | None) -> Path:
    """The file for an embedded run: the given path, or the usual place."""
    folder, name, what = MODEL_FILES[option]
    flag = "--" + option.replace("_", "-")
    path = Path(value).expanduser() if value else MODELS_HOME / folder / name
    if not value and option == "depth_model" and not path.is_file():
        path = MODELS_HOME / "mimicbrush" / name  # the loader looks next to mimicbrush.bin too
    if not path.is_file():
        raise InputError(
            f"{flag}: file not found: {path}. MimicBrush needs {what}: download {name}, and "
            f"give its path with {flag} (or put it into {MODELS_HOME / folder}/)"
        )
    return path.resolve()


def _server_name(option: str, name: str) -> str:
    """As the nodes list it: the depth model with its folder (``depth_anything/<name>``)."""
    if option == "depth_model" and "/" not in name:
        return f"{MODEL_FILES[option][0]}/{name}"
    return name


def check_settings(args) -> MimicBrushSettings:
    """Every option checked before anything starts; errors name the option and the fix."""
    for name in ("steps", "samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise InputError(f"--{name} must be at least 1, got {value}")
    if args.crop_around_mask is not None and not 0.0 <= args.crop_around_mask <= 10.0:
        raise InputError(
            f"--crop-around-mask: the margin is a fraction of the mask's size, 0 to 10; "
            f"got {args.crop_around_mask}"
        )
    target = check_image(args.target, "--target")
    mask = check_image(args.mask, "--mask", mask=True)
    t_size, m_size = (
        check_image_file(target, "--target"),
        check_image_file(mask, "--mask", mask=True),
    )
    if t_size != m_size:
        raise InputError(
            f"--mask: {mask.name} is {m_size[0]}x{m_size[1]} px but the target is "
            f"{t_size[0]}x{t_size[1]} px (as shown, after its EXIF orientation); draw the mask "
            "at the target's size (white = repaint, black = keep)"
        )
    files: dict[str, Path] = {}
    models = {}
    for option, (folder, name, _) in MODEL_FILES.items():
        value = getattr(args, option)
        if args.server:
            models[option] = _server_name(option, value or name)
        else:
            files[folder] = _model_file(option, value)
            models[option] = _server_name(option, files[folder].name)
    return MimicBrushSettings(
        target=target,
        mask=mask,
        reference=check_image(args.reference, "--reference"),
        out=check_out(args.out),
        shape_control=bool(args.shape_control),
        models=models,
        files=files,
        steps=args.steps,
        seed=args.seed,
        cfg=args.cfg,
        samples=args.samples,
        crop_margin=args.crop_around_mask,
    )


# -- the graph -------------------------------------------------------------------------------
def build_prompt(settings: MimicBrushSettings, info: dict, images: dict[str, str]) -> dict:
    """The shipped workflow with the user's files, names and options, as an API prompt."""
    workflow = json.loads(WORKFLOW_FILES[settings.shape_control].read_text())
    (loader,) = nodes_of_type(workflow, "AnalogistMimicBrushLoader")
    set_widget(workflow, loader["id"], "mimicbrush", settings.models["mimicbrush"], info)
    set_widget(workflow, loader["id"], "depth_model", settings.models["depth_model"], info)
    (vae,) = nodes_of_type(workflow, "VAELoader")
    set_widget(workflow, vae["id"], "vae_name", settings.models["vae"], info)
    (apply,) = nodes_of_type(workflow, "AnalogistMimicBrushApply")
    for node in nodes_of_type(workflow, "LoadImage"):
        role = "reference" if node.get("title", "").startswith("Reference") else "target"
        set_widget(workflow, node["id"], "image", images[role], info)
    if settings.seed is not None:
        set_widget(workflow, apply["id"], "seed", settings.seed, info)
    if settings.samples is not None:
        set_widget(workflow, apply["id"], "samples_per_target", settings.samples, info)
    if settings.crop_margin is not None:
        set_widget(workflow, apply["id"], "crop_around_mask", True, info)
        set_widget(workflow, apply["id"], "crop_margin", settings.crop_margin, info)
    (sampler,) = nodes_of_type(workflow, "SamplerCustom")
    for value, name in ((settings.seed, "noise_seed"), (settings.cfg, "cfg")):
        if value is not None:
            set_widget(workflow, sampler["id"], name, value, info)
    if settings.steps is not None:
        (sigmas,) = nodes_of_type(workflow, "AnalogistDDIMSigmas")
        set_widget(workflow, sigmas["id"], "steps", settings.steps, info)
    prompt = ui_to_api(workflow, info)
    # The mask file (red channel, white = repaint) instead of the target's painted alpha.
    mask_id = str(max(int(key) for key in prompt) + 1)
    prompt[mask_id] = {
        "class_type": "LoadImageMask",
        "inputs": {"image": images["mask"], "channel": "red"},
        "_meta": {"title": "Mask (--mask)"},
    }
    for node in prompt.values():
        if node["class_type"] in ("AnalogistMimicBrushApply", "AnalogistMimicBrushPaste"):
            node["inputs"]["mask"] = [mask_id, 0]
    return prompt


def check_server(client: ComfyClient, info: dict, settings: MimicBrushSettings) -> None:
    from .runner import check_pack_identity

    missing = [n for n in NEEDED_NODES if n not in info]
    if missing:
        raise ServerError(
            f"{client.url} lacks the node(s) {', '.join(missing)}: install this pack into its "
            "custom_nodes (and update ComfyUI for SamplerCustom), then restart it"
        )
    check_pack_identity(client, info, list(NEEDED_NODES))
    listed = {
        "mimicbrush": info["AnalogistMimicBrushLoader"]["input"]["required"]["mimicbrush"][0],
        "depth_model": info["AnalogistMimicBrushLoader"]["input"]["required"]["depth_model"][0],
        "vae": info["VAELoader"]["input"]["required"]["vae_name"][0],
    }
    for option, names in listed.items():
        wanted = settings.models[option]
        if wanted not in names:
            folder = MODEL_FILES[option][0]
            shown = ", ".join(map(str, names[:12])) or "none"
            raise ServerError(
                f"{client.url} has no {wanted!r} for --{option.replace('_', '-')} (it lists: "
                f"{shown}). Put the file into that ComfyUI's models/{folder}/ and restart it, "
                "or name one it lists"
            )


def run_on_server(settings: MimicBrushSettings, url: str, log) -> list[Path]:
    from .runner import Job, Outcome, Progress, upload, write_atomic

    client = ComfyClient(url)
    try:
        client.check()
        info = client.object_info()
        check_server(client, info, settings)
        make_out(settings.out)
        progress = Progress(1, log)
        job = Job(settings.target, 0)
        client.on_progress = functools.partial(progress.step, url)
        images = {
            "target": upload(client, settings.target, "mimicbrush_target", "--target"),
            "mask": upload(client, settings.mask, "mimicbrush_mask", "--mask", mask=True),
            "reference": upload(client, settings.reference, "mimicbrush_reference", "--reference"),
        }
        prompt = build_prompt(settings, info, images)
        prompt_id = client.queue(prompt)
        progress.started(prompt_id, job)
        finished = client.wait(prompt_id)
        files = []
        stem = settings.target.stem
        for node_id, node in prompt.items():
            if node["class_type"] != "SaveImage":
                continue
            for i, image in enumerate(finished.outputs.get(node_id, {}).get("images", [])):
                target = settings.out / f"{stem}_mimicbrush{f'_{i}' if i else ''}.png"
                write_atomic(target, client.view(image))
                files.append(target)
        if not files:
            raise ServerError(f"{url}: the run finished but saved no image")
        progress.update(Outcome(job, url, files=files))
        return files
    except BaseException:
        try:
            client.cancel()
        except (ServerError, OSError, ValueError):
            pass
        raise
    finally:
        client.close()


def main_mimicbrush(args, log=None) -> int:
    from .embedded import EmbeddedFailed, embedded_comfyui
    from .main import check_finite, run_guarded

    log = log or sys.stderr

    def run() -> int:
        check_finite(args)
        server = check_url(args.server) if args.server else None
        settings = check_settings(args)
        if server is not None:
            files = run_on_server(settings, server, log)
        else:
            with embedded_comfyui(
                None, log, keep_log=settings.out / "comfyui.log", models=settings.files
            ) as url:
                files = run_on_server(settings, url, log)
        for path in files:
            print(path, flush=True)
        return 0

    return run_guarded(run, (InputError, ServerError, WorkflowError, EmbeddedFailed))
