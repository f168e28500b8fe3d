"""``python -m analogist score RESULTS --clip DIR``: the paper's CLIP direction metric.

For each analogy A : A' :: B : B' and each sample B'_n, the score is

    cos(E(A') - E(A), E(B'_n) - E(B))

with E the projected image features of ``transformers``' ``CLIPModel.get_image_features``
(the paper: openai/clip-vit-base-patch16, unnormalised). An analogy's score is the mean
over its samples; a task's is the mean over its analogies; ``overall`` is the mean over
all analogies. The model is read from a local folder only (nothing is downloaded).

What is read, anywhere under RESULTS (the layout ``python -m analogist run`` writes):

* ``<name>_b_prime.png``, ``<name>_b_prime_1.png``, ...: the samples of analogy ``<name>``;
* ``<name>_b.png``: its B; ``<name>_a.png`` and ``<name>_a_prime.png``: its A and A'
  (or ``a.png`` and ``a_prime.png`` in the same folder, shared by every analogy there).
  With no name (``b_prime.png``, ``b.png``, ...) the folder is one analogy.

A task is a folder directly under RESULTS (files directly in RESULTS form one task named
after RESULTS). Other files (strips, grids) are ignored. ``transformers`` is imported only
here, and only when scoring.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..analogist_metrics.direction import direction_similarity

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SAMPLE = re.compile(r"^(?:(?P<name>.+)_)?b_prime(?:_(?P<n>\d+))?$")
CSV_NAME = "clip_direction_scores.csv"
CLIP_HINT = (
    "Give the folder of a CLIP model in the Hugging Face layout (config.json, the weights, "
    "preprocessor_config.json); the paper uses openai/clip-vit-base-patch16, e.g. "
    "`huggingface-cli download openai/clip-vit-base-patch16 --local-dir DIR` on a machine "
    "with internet."
)


class ScoreError(ValueError):
    """Results or a model that cannot be scored; the message says what to fix."""


@dataclass(frozen=True)
class Analogy:
    task: str
    name: str  # the folder (relative to the task) and the file name stem, e.g. "cat" or "set1/cat"
    a: Path
    a_prime: Path
    b: Path
    samples: tuple[Path, ...]


@dataclass(frozen=True)
class AnalogyScore:
    analogy: Analogy
    sample_scores: tuple[float, ...]

    @property
    def score(self) -> float:
        return float(np.mean(self.sample_scores))


# -- finding the files -----------------------------------------------------------------------
def _images(folder: Path) -> dict[str, list[Path]]:
    by_stem: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(path.stem, []).append(path)
    return by_stem


def _one(by_stem: dict[str, list[Path]], stems: Iterable[str], what: str, where: str) -> Path:
    stems = list(dict.fromkeys(stems))
    for stem in stems:
        found = sorted(by_stem.get(stem, []))
        if len(found) > 1:
            raise ScoreError(
                f"{where}: several files for {what}: {', '.join(p.name for p in found)}; keep one."
            )
        if found:
            return found[0]
    names = " or ".join(f"{s}.png" for s in stems)
    raise ScoreError(f"{where}: no {what} ({names}) next to its B' samples.")


def find_analogies(results: Path) -> list[Analogy]:
    results = Path(results).expanduser()
    if not results.is_dir():
        raise ScoreError(f"RESULTS: not a folder: {results}")
    analogies = []
    for folder in sorted([results, *(p for p in results.rglob("*") if p.is_dir())]):
        by_stem = _images(folder)
        groups: dict[str, list[tuple[int, Path]]] = {}
        for stem, paths in by_stem.items():
            match = SAMPLE.match(stem)
            if match:
                number = int(match["n"]) if match["n"] is not None else 0
                groups.setdefault(match["name"] or "", []).extend((number, p) for p in paths)
        relative = folder.relative_to(results)
        task = relative.parts[0] if relative.parts else results.resolve().name
        inner = Path(*relative.parts[1:]) if len(relative.parts) > 1 else Path()
        for name, samples in sorted(groups.items()):
            prefix = f"{name}_" if name else ""
            where = str(folder / (name or "."))
            analogies.append(
                Analogy(
                    task=task,
                    name=str(inner / name) if name else (str(inner) if inner.parts else task),
                    a=_one(by_stem, [f"{prefix}a", "a"], "A", where),
                    a_prime=_one(by_stem, [f"{prefix}a_prime", "a_prime"], "A'", where),
                    b=_one(by_stem, [f"{prefix}b"], "B", where),
                    samples=tuple(p for _, p in sorted(samples)),
                )
            )
    if not analogies:
        raise ScoreError(
            f"RESULTS: no B' samples (files named <name>_b_prime.png or b_prime.png) under {results}. "
            "Point it at the --out folder of `python -m analogist run`."
        )
    return analogies


def score_analogies(
    analogies: list[Analogy], embed: Callable[[list[Path]], dict[Path, np.ndarray]]
) -> list[AnalogyScore]:
    paths = sorted({p for x in analogies for p in (x.a, x.a_prime, x.b, *x.samples)})
    e = embed(paths)

    def scores(x: Analogy) -> tuple[float, ...]:
        samples = torch.from_numpy(np.stack([e[p] for p in x.samples]))
        row = [torch.from_numpy(np.asarray(e[p]))[None] for p in (x.a, x.a_prime, x.b)]
        return tuple(float(s) for s in direction_similarity(row[0], row[1], row[2], samples))

    return [AnalogyScore(x, scores(x)) for x in analogies]


@dataclass(frozen=True)
class Row:
    level: str  # "analogy", "task" or "overall"
    task: str
    analogy: str
    analogies: int
    samples: int
    score: float


def summary(scores: list[AnalogyScore]) -> list[Row]:
    """Per analogy; per task (the mean over its analogies); overall, the mean of the task
    means (what the paper's evaluation script reports as its average similarity); and,
    labelled apart, the mean over all analogies (differs when tasks differ in size)."""
    rows = [
        Row("analogy", s.analogy.task, s.analogy.name, 1, len(s.sample_scores), s.score)
        for s in scores
    ]
    task_rows = []
    for task in sorted({s.analogy.task for s in scores}):
        mine = [s for s in scores if s.analogy.task == task]
        samples = sum(len(s.sample_scores) for s in mine)
        task_rows.append(
            Row("task", task, "", len(mine), samples, float(np.mean([s.score for s in mine])))
        )
    samples = sum(len(s.sample_scores) for s in scores)
    overall = float(np.mean([r.score for r in task_rows]))
    every = float(np.mean([s.score for s in scores]))
    return [
        *rows,
        *task_rows,
        Row("overall", "", "", len(scores), samples, overall),
        Row("all_analogies", "", "", len(scores), samples, every),
    ]


def write_csv(rows: list[Row], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["level", "task", "analogy", "analogies", "samples", "clip_direction"])
        for r in rows:
            writer.writerow([r.level, r.task, r.analogy, r.analogies, r.samples, f"{r.score:.6f}"])


def table(rows: list[Row]) -> str:
    shown = [r for r in rows if r.level != "analogy"]
    width = max(len("overall (mean of tasks)"), *(len(r.task) for r in shown))
    lines = [f"{'task':<{width}}  {'analogies':>9}  {'samples':>7}  {'CLIP direction':>14}"]
    names = {"overall": "overall (mean of tasks)", "all_analogies": "mean of all analogies"}
    for r in shown:
        lines.append(
            f"{r.task or names[r.level]:<{width}}  {r.analogies:>9}  {r.samples:>7}  {r.score:>14.4f}"
        )
    return "\n".join(lines)


# -- the model -------------------------------------------------------------------------------
class ClipImageEncoder:
    """``CLIPModel.get_image_features`` from a local folder, as the paper's evaluation uses it."""

    def __init__(self, folder: Path, device: str | None = None, batch_size: int = 16):
        folder = Path(folder).expanduser()
        if not (folder / "config.json").is_file():
            raise ScoreError(
                f"--clip: {folder} is not a model folder (no config.json). {CLIP_HINT}"
            )
        import torch
        from transformers import CLIPImageProcessor, CLIPModel

        try:
            self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ScoreError(
                f"--clip: cannot load a CLIPModel from {folder} ({exc}). {CLIP_HINT}"
            ) from exc
        if (folder / "preprocessor_config.json").is_file():
            self.processor = CLIPImageProcessor.from_pretrained(str(folder), local_files_only=True)
        else:  # CLIP's own resize, centre crop and normalisation at the model's input size
            size = self.model.config.vision_config.image_size
            self.processor = CLIPImageProcessor(
                size={"shortest_edge": size}, crop_size={"height": size, "width": size}
            )
            print(
                f"[analogist] {folder} has no preprocessor_config.json: using CLIP's standard "
                f"preprocessing at {size} px",
                file=sys.stderr,
            )
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.torch = torch

    def features(self, pixel_values):
        out = self.model.get_image_features(pixel_values=pixel_values.to(self.device))
        # transformers 4.x returns the features; 5.x a model output with them as pooler_output.
        return out if isinstance(out, self.torch.Tensor) else out.pooler_output

    def __call__(self, paths: list[Path]) -> dict[Path, np.ndarray]:
        from PIL import Image

        found: dict[Path, np.ndarray] = {}
        for start in range(0, len(paths), self.batch_size):
            chunk = paths[start : start + self.batch_size]
            images = []
            for path in chunk:
                try:
                    with Image.open(path) as image:
                        images.append(image.convert("RGB"))
                except OSError as exc:
                    raise ScoreError(f"cannot read {path} as an image ({exc})") from exc
            pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
            with self.torch.no_grad():
                features = self.features(pixels).float().cpu().numpy()
            found.update(zip(chunk, features, strict=True))
        return found


def main_score(
    results: Path, clip: Path, csv_path: Path | None = None, device: str | None = None, stream=None
) -> int:
    stream = stream or sys.stdout
    analogies = find_analogies(results)  # before the model loads: bad folders fail fast
    encoder = ClipImageEncoder(clip, device)
    rows = summary(score_analogies(analogies, encoder))
    csv_path = Path(csv_path) if csv_path else Path(results).expanduser() / CSV_NAME
    write_csv(rows, csv_path)
    print(table(rows), file=stream)
    print(f"\nper analogy: {csv_path}", file=stream, flush=True)
    return 0
