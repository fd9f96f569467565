"""Resumable state keyed on settings and on what the inputs hold."""

import shutil

import numpy as np

from idiff_core.io import write_png
from idiff_core.resume import StateFolder, file_key, images_key, settings_key


def test_a_state_folder_per_key_and_other_keys_dropped_with_what_changed(tmp_path, capsys):
    first = StateFolder(tmp_path, {"settings": "a", "images": "x", "steps": [1, 2]}, "stage")
    assert first.open() == first.path and (first.path / "key.json").is_file()
    (first.path / "checkpoint.pt").write_bytes(b"state")
    same = StateFolder(tmp_path, {"steps": (1, 2), "images": "x", "settings": "a"}, "stage")
    assert same.path == first.path and (same.open() / "checkpoint.pt").read_bytes() == b"state"
    (tmp_path / "fr_state.pt").write_bytes(b"a state of the layout before key folders")
    other = StateFolder(tmp_path, {"settings": "b", "images": "x", "steps": [1, 2]}, "stage")
    other.open()
    assert [p.name for p in tmp_path.iterdir()] == [other.path.name]
    assert "(other settings)" in capsys.readouterr().err


def test_keys_follow_content_not_modification_times(tmp_path):
    for i in range(3):
        write_png(tmp_path / "a" / f"{i}.png", np.full((8, 8, 3), i, dtype=np.uint8))
    (tmp_path / "a" / "model.pt").write_bytes(b"weights")
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copyfile)  # new times, new place
    images = lambda root: images_key(root, sorted(root.glob("*.png")))
    assert images(tmp_path / "a") == images(tmp_path / "b")
    assert file_key(tmp_path / "a" / "model.pt") == file_key(tmp_path / "b" / "model.pt")
    (tmp_path / "b" / "model.pt").write_bytes(b"weightz")  # same size, other bytes
    assert file_key(tmp_path / "a" / "model.pt") != file_key(tmp_path / "b" / "model.pt")
    write_png(tmp_path / "b" / "0.png", np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    assert images(tmp_path / "a") != images(tmp_path / "b")
    assert file_key(None) == "none" and settings_key({"a": 1, "b": 2}) == settings_key({"b": 2, "a": 1})
