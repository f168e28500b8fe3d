"""``python -m analogist score``: the paper's CLIP direction metric with a real (random-weight)
``transformers`` CLIPModel, on folders laid out as the runner writes them."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from comfyui_analogist.analogist_cli.inputs import Settings
from comfyui_analogist.analogist_cli.main import main
from comfyui_analogist.analogist_cli.runner import Job, save_inputs
from comfyui_analogist.analogist_cli.score import find_analogies
from PIL import Image
from support.grid_images import pattern

SIZE = 32


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A random CLIPModel (tiny CLIPConfig) and CLIP's image processor, saved like a download."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
        },
        vision_config={
            "image_size": SIZE,
            "patch_size": 8,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "initializer_range": 0.2,
        },
        projection_dim=16,
    )
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    ).save_pretrained(folder)
    return folder


def save(path: Path, seed: int, width: int = 40, height: int = 36) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pattern(width, height, seed=seed, square=3 + 2 * seed)).save(path)
    return path


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    color = root / "colorization"  # the runner's layout: <name>_a, _a_prime, _b, _b_prime[_N]
    for name, base, samples in (("cat", 1, 3), ("dog", 20, 1)):
        for role, offset in (("a", 0), ("a_prime", 1), ("b", 2)):
            save(color / f"{name}_{role}.png", base + offset)
        for n in range(samples):
            save(
                color / (f"{name}_b_prime.png" if n == 0 else f"{name}_b_prime_{n}.png"),
                base + 5 + n,
            )
        save(color / f"{name}_strip.png", 99)  # ignored
    sketch = root / "sketch"  # one A, A' for the folder; and a folder that is one analogy
    save(sketch / "a.png", 40)
    save(sketch / "a_prime.png", 41)
    save(sketch / "x_b.png", 42)
    save(sketch / "x_b_prime.png", 43)
    save(sketch / "x_b_prime_1.png", 44)
    for role, seed in (("a", 7), ("a_prime", 30), ("b", 13), ("b_prime", 3)):
        save(sketch / "one" / f"{role}.jpg", seed)
    return root


def independent_features(clip_dir: Path, paths: list[Path]) -> dict[Path, np.ndarray]:
    """CLIP's projection of the vision tower's pooled output, computed here by hand."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    processor = CLIPImageProcessor.from_pretrained(clip_dir)
    out = {}
    with torch.no_grad():
        for path in paths:
            pixels = processor(images=[Image.open(path).convert("RGB")], return_tensors="pt")[
                "pixel_values"
            ]
            pooled = model.vision_model(pixel_values=pixels).pooler_output
            out[path] = model.visual_projection(pooled)[0].double().numpy()
    return out


def cos(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_scores_are_the_mean_direction_similarity_per_analogy_task_and_overall(
    results, clip_dir, tmp_path, capsys
):
    out_csv = tmp_path / "scores.csv"
    assert (
        main(
            [
                "score",
                str(results),
                "--clip",
                str(clip_dir),
                "--csv",
                str(out_csv),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out

    c, s = results / "colorization", results / "sketch"
    analogies = {
        ("colorization", "cat"): (
            c / "cat_a.png",
            c / "cat_a_prime.png",
            c / "cat_b.png",
            [c / "cat_b_prime.png", c / "cat_b_prime_1.png", c / "cat_b_prime_2.png"],
        ),
        ("colorization", "dog"): (
            c / "dog_a.png",
            c / "dog_a_prime.png",
            c / "dog_b.png",
            [c / "dog_b_prime.png"],
        ),
        ("sketch", "x"): (
            s / "a.png",
            s / "a_prime.png",
            s / "x_b.png",
            [s / "x_b_prime.png", s / "x_b_prime_1.png"],
        ),
        ("sketch", "one"): (
            s / "one/a.jpg",
            s / "one/a_prime.jpg",
            s / "one/b.jpg",
            [s / "one/b_prime.jpg"],
        ),
    }
    e = independent_features(
        clip_dir, sorted({p for a, ap, b, bp in analogies.values() for p in (a, ap, b, *bp)})
    )
    expected = {
        key: float(np.mean([cos(e[ap] - e[a], e[p] - e[b]) for p in bp]))
        for key, (a, ap, b, bp) in analogies.items()
    }
    assert len({round(v, 3) for v in expected.values()}) == 4, "test images too alike"

    rows = read_csv(out_csv)
    per_analogy = {(r["task"], r["analogy"]): r for r in rows if r["level"] == "analogy"}
    assert set(per_analogy) == set(expected)
    for key, value in expected.items():
        assert float(per_analogy[key]["clip_direction"]) == pytest.approx(value, abs=2e-6), key
        assert int(per_analogy[key]["samples"]) == len(analogies[key][3])
    tasks = {r["task"]: float(r["clip_direction"]) for r in rows if r["level"] == "task"}
    assert tasks["colorization"] == pytest.approx(
        np.mean([expected[("colorization", n)] for n in ("cat", "dog")]), abs=2e-6
    )
    assert tasks["sketch"] == pytest.approx(
        np.mean([expected[("sketch", n)] for n in ("x", "one")]), abs=2e-6
    )
    (overall,) = [r for r in rows if r["level"] == "overall"]
    assert float(overall["clip_direction"]) == pytest.approx(
        np.mean(list(tasks.values())), abs=2e-6
    )
    assert overall["samples"] == "7"
    (every,) = [r for r in rows if r["level"] == "all_analogies"]
    assert float(every["clip_direction"]) == pytest.approx(
        np.mean(list(expected.values())), abs=2e-6
    )
    # The table: one line per task and the overall mean, 4 decimals.
    assert f"{tasks['sketch']:.4f}" in printed and "overall" in printed and str(out_csv) in printed


def test_overall_is_the_mean_of_the_task_means_as_the_papers_script_reports_it():
    """Tasks of different sizes: the paper's average weighs every task alike; the mean over
    all analogies (printed too, labelled) would weigh the larger task more."""
    from comfyui_analogist.analogist_cli.score import Analogy, AnalogyScore, summary

    def one(task: str, name: str, value: float) -> AnalogyScore:
        p = Path(f"{task}/{name}.png")
        return AnalogyScore(Analogy(task, name, p, p, p, (p,)), (value,))

    scores = [
        one("big", "a", 0.9),
        one("big", "b", 0.7),
        one("big", "c", 0.8),
        one("small", "x", 0.2),
    ]
    rows = {r.level: r for r in summary(scores) if r.level in ("overall", "all_analogies")}
    assert rows["overall"].score == pytest.approx((0.8 + 0.2) / 2)
    assert rows["all_analogies"].score == pytest.approx((0.9 + 0.7 + 0.8 + 0.2) / 4)


def test_the_runner_writes_a_folder_the_evaluator_reads(tmp_path):
    a, a_prime = save(tmp_path / "in" / "ex_a.png", 1), save(tmp_path / "in" / "ex_a2.jpg", 2)
    b = save(tmp_path / "in" / "green.png", 3)
    out = tmp_path / "out"
    out.mkdir()
    settings = Settings(a=a, a_prime=a_prime, b=[b], out=out, checkpoint="x")
    save(out / "green_b_prime.png", 4)  # what run_job saves from the server
    save_inputs(settings, Job(b, 0), "green")
    (found,) = find_analogies(out)
    assert (found.a.name, found.a_prime.name, found.b.name) == (
        "green_a.png",
        "green_a_prime.png",  # saved as the PNG that was sampled (issue 23)
        "green_b.png",
    )
    assert found.samples == (out / "green_b_prime.png",) and found.task == "out"
    assert found.a.read_bytes() == a.read_bytes() or np.array_equal(
        np.asarray(Image.open(found.a)), np.asarray(Image.open(a).convert("RGB"))
    )


def test_a_folder_without_samples_is_refused_before_any_model_loads(tmp_path, capsys):
    save(tmp_path / "cat_b.png", 1)
    assert main(["score", str(tmp_path), "--clip", str(tmp_path / "no-model")]) == 2
    assert "no B' samples" in capsys.readouterr().err


def test_a_missing_a_prime_is_named(tmp_path, capsys):
    for role in ("a", "b", "b_prime"):
        save(tmp_path / f"cat_{role}.png", 1)
    assert main(["score", str(tmp_path), "--clip", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no A' (cat_a_prime.png or a_prime.png)" in err and "cat" in err


def test_a_clip_folder_that_is_not_a_model_says_what_to_give(results, tmp_path, capsys):
    assert main(["score", str(results), "--clip", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "--clip" in err and "no config.json" in err and "openai/clip-vit-base-patch16" in err
