"""The runner's image inputs as ComfyUI's own Load Image sees them (issue 23).

Each refused kind is first shown to go wrong in the host's real ``LoadImage`` (so the
refusal is needed), then refused by the runner before anything runs. Each accepted kind is
uploaded as the runner's PNG, and the host's ``LoadImage`` reads that PNG as it reads the
user's file: the runner's check and the node agree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from comfyui_analogist.analogist_cli.main import main
from comfyui_analogist.analogist_pixels.image_files import (
    ImageFileError,
    check_image_file,
    upload_bytes,
)
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "workflows" / "images"
ORIENTATION = 0x0112


def host_load_image(folder: Path, name: str) -> torch.Tensor:
    """The host ComfyUI's real Load Image on ``folder/name``."""
    try:
        import folder_paths

        import nodes
    except ImportError:  # the 0.0.1 registry packaging
        from comfy.cmd import folder_paths
        from comfy.nodes import base_nodes as nodes
    previous = folder_paths.get_input_directory()
    folder_paths.set_input_directory(str(folder))
    try:
        image, _ = nodes.LoadImage().load_image(name)
    finally:
        folder_paths.set_input_directory(previous)
    return image.float()


def two_colour(size=(40, 20)) -> Image.Image:
    image = Image.new("RGB", size, (200, 30, 30))
    image.paste((30, 200, 30), (0, 0, size[0] // 2, size[1]))
    return image


def exif_rotated_jpeg(path: Path, size=(40, 20)) -> Path:
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # shown rotated by 90 degrees: 20 wide, 40 tall
    two_colour(size).save(path, exif=exif.tobytes(), quality=95)
    return path


def animated(path: Path) -> Path:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


# -- refused: the host's Load Image would change them ---------------------------------------
def test_a_32_bit_tiff_loads_white_in_load_image_and_the_runner_refuses_it(tmp_path):
    path = tmp_path / "deep.tif"
    Image.new("I", (8, 8), 40000).save(path)  # a mid-grey in a 16-bit range, stored as 32 bit
    with pytest.raises(ImageFileError, match=r"32-bit integer pixels .*loads \(nearly\) white"):
        check_image_file(path, "--b")


def test_a_float_tiff_is_refused_and_load_image_indeed_loses_it(tmp_path):
    path = tmp_path / "float.tif"
    Image.new("F", (8, 8), 0.5).save(path)
    loaded = host_load_image(tmp_path, path.name)
    assert not torch.allclose(loaded, torch.full_like(loaded, 0.5), atol=0.1)  # not the picture
    with pytest.raises(ImageFileError, match="floating-point pixels"):
        check_image_file(path, "--a")


def test_a_16_bit_png_is_refused(tmp_path):
    path = tmp_path / "deep.png"
    Image.new("I;16", (8, 8), 30000).save(path)
    with pytest.raises(ImageFileError, match="16-bit pixels"):
        check_image_file(path, "--a-prime")


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_an_animated_image_is_refused_where_load_image_makes_a_batch(tmp_path, suffix):
    path = animated(tmp_path / f"anim{suffix}")
    try:
        frames = host_load_image(tmp_path, path.name).shape[0]
    except Exception:  # noqa: BLE001 - some hosts cannot read an animated GIF at all
        frames = None
    assert frames in (None, 3)  # several images (several B'), or an error: never one image
    with pytest.raises(ImageFileError, match=r"animated \(3 frames\)"):
        check_image_file(path, "--b")


def test_transparent_pixels_are_refused_because_load_image_shows_the_hidden_colour(tmp_path):
    path = tmp_path / "cut_out.png"
    image = Image.new("RGBA", (8, 8), (255, 255, 255, 255))
    image.paste((255, 0, 0, 0), (0, 0, 4, 8))  # invisible red on the left half
    image.save(path)
    loaded = host_load_image(tmp_path, path.name)
    assert loaded[0, 0, 0].tolist() == [1.0, 0.0, 0.0]  # the hidden red shows
    with pytest.raises(ImageFileError, match="transparent pixels"):
        check_image_file(path, "--a")


@pytest.mark.parametrize(
    "args, says",
    [
        (["--b", "anim.gif"], "--b: anim.gif is animated"),
        (["--a", "anim.gif"], "--a: anim.gif is animated"),
        (["--example", "anim.gif", "ok.png"], "--example 2 (A): anim.gif is animated"),
        (["--a-prime", "float.tif"], "--a-prime: float.tif has floating-point pixels"),
        (["--b", "cut.png"], "--b: cut.png has transparent pixels"),
    ],
)
def test_the_cli_refuses_them_before_anything_runs(capsys, tmp_path, args, says):
    animated(tmp_path / "anim.gif")
    Image.new("F", (8, 8), 0.5).save(tmp_path / "float.tif")
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cut.png")
    two_colour().save(tmp_path / "ok.png")
    paths = [str(tmp_path / a) if a.endswith((".gif", ".tif", ".png")) else a for a in args]
    code = main(
        [
            "run",
            *paths,
            "--server",
            "http://127.0.0.1:9",
            "--checkpoint",
            "x.safetensors",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert not (tmp_path / "out").exists()


# -- accepted: uploaded as a PNG that Load Image reads like the original --------------------
@pytest.mark.parametrize("kind", ["exif_jpeg", "opaque_rgba", "palette", "grey", "cmyk_jpeg"])
def test_the_uploaded_png_loads_in_load_image_as_the_users_file_does(tmp_path, kind):
    source = tmp_path / "source"
    source.mkdir()
    if kind == "exif_jpeg":
        path = exif_rotated_jpeg(source / "b.jpg")
    elif kind == "opaque_rgba":
        path = source / "b.png"
        two_colour().convert("RGBA").save(path)
    elif kind == "palette":
        path = source / "b.png"
        two_colour().convert("P").save(path)
    elif kind == "grey":
        path = source / "b.png"
        two_colour().convert("L").save(path)
    else:
        path = source / "b.jpg"
        two_colour().convert("CMYK").save(path, quality=95)
    uploaded = tmp_path / "uploaded"
    uploaded.mkdir()
    (uploaded / "b.png").write_bytes(upload_bytes(path, "--b"))
    original = host_load_image(source, path.name)
    ours = host_load_image(uploaded, "b.png")
    assert ours.shape == original.shape
    difference = (ours - original).abs()
    if path.suffix == ".jpg":
        # The host may decode JPEG with PyAV, the runner with Pillow: a few levels apart, more
        # at the colour edge (chroma upsampling). A rotation or a colour mix-up would be far off.
        assert difference.mean().item() <= 3 / 255
        assert torch.quantile(difference.flatten(), 0.9).item() <= 6 / 255
    else:  # lossless; 0.30.0 decodes greyscale through PyAV's float RGB (within a level)
        assert difference.max().item() <= 1 / 255
    width, height = check_image_file(path, "--b")
    assert (height, width) == tuple(original.shape[1:3])  # the size the runner checks is the node's


def test_b_region_is_checked_against_the_exif_rotated_size_the_nodes_see(capsys, tmp_path):
    b = exif_rotated_jpeg(tmp_path / "b.jpg")  # stored 40x20, shown 20x40
    common = [
        "run",
        "--b",
        str(b),
        "--server",
        "http://127.0.0.1:9",
        "--checkpoint",
        "x.safetensors",
        "--out",
        str(tmp_path / "out"),
    ]
    raw = tmp_path / "raw.png"
    Image.new("L", (40, 20), 255).save(raw)
    code = main([*common, "--b-region", str(raw)])
    err = capsys.readouterr().err
    assert code == 2 and "raw.png is 40x20 px but B b.jpg is 20x40 px" in err and "EXIF" in err
    shown = tmp_path / "shown.png"
    Image.new("L", (20, 40), 255).save(shown)
    code = main([*common, "--b-region", str(shown)])
    err = capsys.readouterr().err
    # Past every input check: it only fails at the (absent) server.
    assert code == 2 and "cannot reach ComfyUI at http://127.0.0.1:9" in err, err


def test_a_region_mask_may_be_transparent_and_keeps_its_red_channel(tmp_path):
    path = tmp_path / "mask.png"
    mask = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 0), (0, 0, 4, 8))
    mask.save(path)
    check_image_file(path, "--b-region", mask=True)
    out = tmp_path / "up"
    out.mkdir()
    (out / "m.png").write_bytes(upload_bytes(path, "--b-region", mask=True))
    shutil.copy(path, out / "orig.png")
    assert torch.equal(
        host_load_image(out, "m.png")[..., 0], host_load_image(out, "orig.png")[..., 0]
    )


def test_saved_inputs_are_what_was_sampled_an_exif_rotated_b_stands_upright(tmp_path):
    """The runner saves A, A', B beside B' for ``score``: an EXIF-rotated B is saved as the
    nodes saw it (upright, 20x40), not as its stored bytes (40x20, sideways)."""
    from comfyui_analogist.analogist_cli.inputs import Settings
    from comfyui_analogist.analogist_cli.runner import Job, save_inputs

    source = tmp_path / "source"
    source.mkdir()
    b = exif_rotated_jpeg(source / "b.jpg")
    a = source / "a.png"
    two_colour((24, 16)).save(a)
    out = tmp_path / "out"
    out.mkdir()
    settings = Settings(a=a, a_prime=a, b=[b], out=out, checkpoint="x")
    save_inputs(settings, Job(b, 0), "job")
    assert sorted(p.name for p in out.iterdir()) == ["job_a.png", "job_a_prime.png", "job_b.png"]
    sampled = host_load_image(source, "b.jpg")  # what Load Image gave the sampler
    saved = host_load_image(out, "job_b.png")
    assert saved.shape == sampled.shape == (1, 40, 20, 3)
    assert (saved - sampled).abs().mean().item() <= 3 / 255  # JPEG decoders a few levels apart
    with Image.open(out / "job_b.png") as shown:
        assert shown.size == (20, 40) and "exif" not in shown.info
    assert np.array_equal(np.asarray(Image.open(out / "job_a.png")), np.asarray(Image.open(a)))
