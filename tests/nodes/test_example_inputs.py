"""``example_inputs.install_example_inputs``: copies missing examples, keeps everything else."""

from __future__ import annotations

import logging
from pathlib import Path

from comfyui_analogist.example_inputs import example_files, install_example_inputs


def test_copies_missing_files_and_keeps_a_different_file_of_the_same_name(tmp_path):
    target = tmp_path / "input"
    target.mkdir()
    (target / "analogist_example_a.png").write_bytes(b"mine")
    written = install_example_inputs(target)
    assert (target / "analogist_example_a.png").read_bytes() == b"mine"
    assert target / "analogist_example_a.png" not in written
    assert (target / "analogist_example_b.png").is_file()
    assert (target / "reversion_inside" / "text.json").is_file()
    assert install_example_inputs(target) == []  # second load: nothing to do
    assert len(written) == len(example_files()) - 1


def test_an_input_folder_that_cannot_be_written_is_a_warning_not_a_crash(tmp_path, caplog):
    target = tmp_path / "input"
    target.write_bytes(b"a file where the folder should be")  # fails for root too
    with caplog.at_level(logging.WARNING, logger="comfyui_analogist"):
        assert install_example_inputs(target) == []
    assert "could not copy the example image" in caplog.text
    assert target.read_bytes() == b"a file where the folder should be"


def test_a_link_inside_input_that_leads_elsewhere_is_not_written_through(tmp_path, caplog):
    target, elsewhere = tmp_path / "input", tmp_path / "elsewhere"
    target.mkdir()
    elsewhere.mkdir()
    (target / "reversion_inside").symlink_to(elsewhere, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="comfyui_analogist"):
        install_example_inputs(target)
    assert list(elsewhere.iterdir()) == []
    assert "leads outside" in caplog.text
    assert (target / "analogist_example_a.png").is_file()


def test_without_comfyui_nothing_happens(monkeypatch):
    from comfyui_analogist import example_inputs

    monkeypatch.setattr(example_inputs, "_input_directory", lambda: None)
    assert install_example_inputs() == []
    assert Path(example_inputs.IMAGES).is_dir()
