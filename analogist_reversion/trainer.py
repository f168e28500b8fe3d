"""The ReVersion training loop: AdamW on the ``<R>`` row alone, gradient accumulation.

The loop is plain torch over ``ModelParts``; ComfyUI enters only through the callbacks
(progress, interrupt) the caller passes. Order of work per micro-step, as in the official
script: pick images (shuffled epochs over ``repeats`` copies), draw a template and the
positive prepositions per image, sample the VAE posterior, the noise and t, back-propagate
``loss / accumulation``; step the optimizer every ``accumulation`` micro-steps and at the
end of each epoch. The random streams are our own (seeded), not the official ones.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import embeddings
from .data import Exemplar
from .loss import LossWeights, ModelParts, relation_loss
from .recipe import RELATION_WORDS, Recipe
from .schedule import importance_distribution, sample_timesteps

log = logging.getLogger("analogist")

STATE_FILE = "resume.state"


class TrainingError(ValueError):
    """A run that cannot start as asked; the message says what to change."""


def adamw(r: torch.nn.Parameter, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW on the single row, the official betas, eps and decoupled weight decay."""
    return torch.optim.AdamW(
        [r], lr=recipe.learning_rate, betas=recipe.adam_betas, eps=recipe.adam_eps,
        weight_decay=recipe.weight_decay,
    )  # fmt: skip


@dataclass
class Progress:
    """Where a run is; saved with the resume state."""

    step: int = 0
    micro_step: int = 0
    epoch: int = 0
    order: list[int] = field(default_factory=list)
    next_batch: int = 0
    losses: list[float] = field(default_factory=list)  # mean micro-step loss per optimizer step


@dataclass
class Result:
    r: torch.Tensor
    losses: list[float]
    embedding: Path
    official_bin: Path | None
    steps: int


def latent_moments(
    encode_moments, exemplars: list[Exemplar], device
) -> tuple[torch.Tensor, torch.Tensor]:
    """VAE posterior mean and std (unscaled) of every exemplar, computed once."""
    means, stds = [], []
    with torch.no_grad():
        for ex in exemplars:
            mean, std = encode_moments(ex.pixels.unsqueeze(0).to(device))
            means.append(mean.float())
            stds.append(std.float())
    return torch.cat(means), torch.cat(stds)


def _settings_key(recipe: Recipe, exemplars: list[Exemplar]) -> dict:
    return {"recipe": asdict(recipe), "exemplars": [[e.name, list(e.templates)] for e in exemplars]}


class Trainer:
    """One run: ``run()`` trains to ``recipe.max_steps`` (or resumes) and saves ``<name>``."""

    def __init__(
        self,
        parts: ModelParts,
        encode_moments: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        latent_scale: float,
        exemplars: list[Exemplar],
        recipe: Recipe,
        name: str,
        folder: Path,
        device: torch.device,
        save_official_bin: bool = False,
        taken_folders: list[Path] | None = None,
        on_step: Callable[[int, int, float], None] | None = None,
        check_interrupt: Callable[[], None] | None = None,
    ):
        recipe.check()
        if not exemplars:
            raise TrainingError("no exemplars: give 4-10 images that share one relation")
        self.parts, self.encode_moments, self.latent_scale = parts, encode_moments, latent_scale
        self.exemplars, self.recipe, self.device = exemplars, recipe, torch.device(device)
        self.name = embeddings.check_name(name)
        self.folder = Path(folder)
        self.save_bin = save_official_bin
        self.on_step = on_step or (lambda step, total, loss: None)
        self.check_interrupt = check_interrupt or (lambda: None)
        taken = embeddings.taken_by([self.folder, *(taken_folders or [])], self.name)
        if taken is not None:
            raise embeddings.EmbeddingNameError(
                f"an embedding named {self.name!r} already exists ({taken}); choose a new name "
                "(it is never overwritten)"
            )
        self.run_dir = embeddings.run_folder(self.folder, self.name)

    # -- state ------------------------------------------------------------------------
    def _init_state(self):
        tokens = self.parts.tokens
        init_id = tokens.word_id(self.recipe.initializer_token)
        table = self.parts.token_table
        self.r = torch.nn.Parameter(table[init_id].detach().float().clone().to(table.device))
        self.optimizer = adamw(self.r, self.recipe)
        self.rng = random.Random(self.recipe.seed)
        self.gen = torch.Generator("cpu").manual_seed(self.recipe.seed)
        self.progress = Progress()

    def _save_state(self) -> None:
        opt = self.optimizer.state.get(self.r, {})
        tensors = {"r": self.r.detach(), "rng_torch": self.gen.get_state()}
        for key in ("exp_avg", "exp_avg_sq"):
            if key in opt:
                tensors[key] = opt[key]
        opt_step = opt.get("step", 0)
        meta = {
            "settings": _settings_key(self.recipe, self.exemplars),
            "progress": asdict(self.progress),
            "rng_python": _jsonable(self.rng.getstate()),
            "adam_step": float(opt_step.item() if torch.is_tensor(opt_step) else opt_step),
        }
        embeddings.save_state(self.run_dir / STATE_FILE, tensors, meta)

    def _load_state(self) -> bool:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return False
        tensors, meta = embeddings.load_state(path)
        if meta["settings"] != json.loads(json.dumps(_settings_key(self.recipe, self.exemplars))):
            raise TrainingError(
                f"{path} was saved by a run of {self.name!r} with other settings or exemplars; "
                f"use the same settings to resume, or a new name (or delete {self.run_dir})"
            )
        self._init_state()
        with torch.no_grad():
            self.r.copy_(tensors["r"].to(self.r.device))
        if "exp_avg" in tensors:
            self.optimizer.state[self.r] = {
                "step": torch.tensor(meta["adam_step"]),
                "exp_avg": tensors["exp_avg"].to(self.r.device),
                "exp_avg_sq": tensors["exp_avg_sq"].to(self.r.device),
            }
        self.gen.set_state(tensors["rng_torch"])
        self.rng.setstate(_tupled(meta["rng_python"]))
        self.progress = Progress(**meta["progress"])
        return True

    # -- one micro-step ---------------------------------------------------------------
    def _batch(self):
        p = self.progress
        if p.next_batch * self.recipe.batch_size >= len(p.order):
            if p.order:
                p.epoch += 1
            p.order = [i for i in range(len(self.exemplars)) for _ in range(self.recipe.repeats)]
            self.rng.shuffle(p.order)
            p.next_batch = 0
        start = p.next_batch * self.recipe.batch_size
        items = p.order[start : start + self.recipe.batch_size]
        p.next_batch += 1
        last_of_epoch = p.next_batch * self.recipe.batch_size >= len(p.order)
        return items, last_of_epoch

    def _micro_step(self, items: list[int]) -> float:
        tokens, recipe = self.parts.tokens, self.recipe
        templates = [self.rng.choice(self.exemplars[i].templates) for i in items]
        positives = [self.rng.sample(RELATION_WORDS, recipe.num_positives) for _ in items]
        input_ids = torch.tensor([tokens.prompt(t) for t in templates])
        positive_ids = torch.tensor([tokens.positives(w) for w in positives])
        index = torch.tensor(items)
        mean, std = self.means[index], self.stds[index]
        sample = torch.randn(mean.shape, generator=self.gen).to(self.device)
        x0 = (mean + std * sample) * self.latent_scale
        noise = torch.randn(x0.shape, generator=self.gen).to(self.device)
        t = sample_timesteps(self.p_t, len(items), self.gen)
        terms = relation_loss(
            self.parts, self.r, x0, noise, t, input_ids, positive_ids,
            LossWeights(recipe.denoise_weight, recipe.steer_weight, recipe.temperature),
        )  # fmt: skip
        (terms.total / recipe.gradient_accumulation).backward()
        return float(terms.total.detach())

    # -- the run ----------------------------------------------------------------------
    def run(self) -> Result:
        recipe = self.recipe
        with torch.inference_mode(False), torch.enable_grad():
            resumed = self._load_state()
            if not resumed:
                self._init_state()
            else:
                log.info(
                    "[Analogist] ReVersion %s: resuming at step %d", self.name, self.progress.step
                )
            self.means, self.stds = latent_moments(self.encode_moments, self.exemplars, self.device)
            if recipe.importance_sampling:
                self.p_t = importance_distribution(recipe.scaled_cosine_alpha)
            else:
                self.p_t = importance_distribution(0.0)
            pending: list[float] = []
            self.on_step(
                self.progress.step,
                recipe.max_steps,
                self.progress.losses[-1] if self.progress.losses else float("nan"),
            )
            while self.progress.step < recipe.max_steps:
                self.check_interrupt()
                items, last_of_epoch = self._batch()
                pending.append(self._micro_step(items))
                self.progress.micro_step += 1
                if len(pending) == recipe.gradient_accumulation or last_of_epoch:
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.progress.step += 1
                    self.progress.losses.append(sum(pending) / len(pending))
                    pending = []
                    self._after_step()
            r = self.r.detach().float().cpu().clone()
        embedding = embeddings.save_comfy_embedding(
            embeddings.final_path(self.folder, self.name), r,
            {"method": "ReVersion", "steps": self.progress.step, "initializer": recipe.initializer_token},
        )  # fmt: skip
        official = None
        if self.save_bin:
            official = embeddings.save_official_bin(self.run_dir / "learned_embeds.bin", r)
        return Result(r=r, losses=list(self.progress.losses), embedding=embedding, official_bin=official,
                      steps=self.progress.step)  # fmt: skip

    def _after_step(self) -> None:
        step, recipe = self.progress.step, self.recipe
        self.on_step(step, recipe.max_steps, self.progress.losses[-1])
        if recipe.save_every and step % recipe.save_every == 0 and step < recipe.max_steps:
            path = self.run_dir / f"{self.name}-step{step:06d}.safetensors"
            if not path.exists():
                embeddings.save_comfy_embedding(
                    path, self.r, {"method": "ReVersion", "steps": step}
                )
            self._save_state()


def _jsonable(value):
    if isinstance(value, tuple):
        return {"tuple": [_jsonable(v) for v in value]}
    return value


def _tupled(value):
    if isinstance(value, dict) and "tuple" in value:
        return tuple(_tupled(v) for v in value["tuple"])
    return value
