"""A published IDiff-Face dataset is read as it was released: identity blocks (a grid of tiles per
identity) or identity folders, then assembled like a generated one."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from idiff_core.alignment import read_manifest
from idiff_core.assembly import assemble_dataset
from idiff_core.io import read_rgb, write_png
from idiff_core.released_datasets import GIVEN, ReleasedDataset, ReleasedDatasetError, import_released_dataset, \
    split_block
from idiff_core.standins import write_identity_blocks

TILE = 8


def faces(identities: int, images: int, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Distinct non-black tiles, one list per identity."""
    rng = np.random.default_rng(seed)
    return {f"id{i}": [rng.integers(1, 256, (TILE, TILE, 3), dtype=np.uint8) for _ in range(images)]
            for i in range(identities)}


def blocks(folder, columns: int = 2, identities: int = 3, images: int = 5, rows: int = 3) -> ReleasedDataset:
    write_identity_blocks(folder, faces(identities, images), columns)
    return ReleasedDataset(folder=str(folder), layout="blocks", tile_size=TILE, grid=(rows, columns))


def test_a_block_is_cut_row_by_row_and_its_black_filler_left_out(tmp_path):
    tiles = faces(1, 5)["id0"]
    write_identity_blocks(tmp_path, {"id0": tiles}, columns=2)  # 3 rows x 2 columns, one black tile
    block = read_rgb(tmp_path / "id0.png")
    assert block.shape == (3 * TILE, 2 * TILE, 3) and not block[2 * TILE:, TILE:].any()
    cut = split_block(block, TILE, (3, 2))
    assert len(cut) == 5 and all(np.array_equal(a, b) for a, b in zip(cut, tiles))


def test_blocks_become_identity_folders_with_a_manifest(tmp_path):
    spec = blocks(tmp_path / "release")
    counts = import_released_dataset(spec, tmp_path / "out", tmp_path / "out.csv")
    assert counts == {"identities": 3, "images": 15, "filler_tiles": 3, "unreadable": 0}
    expected = faces(3, 5)
    for name, tiles in expected.items():
        written = [read_rgb(tmp_path / "out" / name / f"{k}.png") for k in range(5)]
        assert all(np.array_equal(a, b) for a, b in zip(written, tiles)), name
        assert not (tmp_path / "out" / name / "5.png").exists()
    rows = read_manifest(tmp_path / "out.csv")
    assert len(rows) == 15 and {r["status"] for r in rows} == {GIVEN}
    assert rows[0]["identity"] == "id0" and rows[0]["path"] == "id0/0.png"
    assert import_released_dataset(spec, tmp_path / "threaded", tmp_path / "threaded.csv", threads=3) == counts
    assert (tmp_path / "threaded.csv").read_bytes() == (tmp_path / "out.csv").read_bytes()
    assert all((tmp_path / "threaded" / r["path"]).read_bytes() == (tmp_path / "out" / r["path"]).read_bytes()
               for r in rows)


def test_a_block_of_another_size_is_named_with_the_size_expected(tmp_path):
    spec = blocks(tmp_path / "release")
    write_png(tmp_path / "release" / "id9.png", np.full((3 * TILE, 3 * TILE, 3), 7, np.uint8))
    with pytest.raises(ReleasedDatasetError, match=r"1 block\(s\) .* id9.png is 24 x 24 px, not 3 x 2 tiles of 8 px "
                                                   r"\(24 x 16\).*tile_size and grid"):
        import_released_dataset(spec, tmp_path / "out", tmp_path / "out.csv")
    wrong_grid = ReleasedDataset(folder=spec.folder, layout="blocks", tile_size=TILE, grid=(2, 2))
    (tmp_path / "release" / "id9.png").unlink()
    with pytest.raises(ReleasedDatasetError, match=r"3 block\(s\)"):
        import_released_dataset(wrong_grid, tmp_path / "out", tmp_path / "out.csv")


def test_an_unreadable_block_is_recorded_and_its_identity_skipped_by_assembly(tmp_path):
    spec = blocks(tmp_path / "release", identities=4)
    (tmp_path / "release" / "id1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    counts = import_released_dataset(spec, tmp_path / "imported", tmp_path / "imported.csv")
    assert counts["unreadable"] == 1 and counts["identities"] == 4 and counts["images"] == 15
    summary = assemble_dataset([tmp_path / "imported"], [tmp_path / "imported.csv"], tmp_path / "dataset",
                               tmp_path / "dataset.csv", tmp_path / "summary.json", identities=3,
                               images_per_identity=4)
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["id0", "id2", "id3"]
    assert all(len(list((tmp_path / "dataset" / name).iterdir())) == 4 for name in ("id0", "id2", "id3"))
    assert summary["images_given"] == 15 and summary["images_unreadable"] == 1
    assert summary["identities_skipped_short"] == 1
    table = pd.read_csv(tmp_path / "dataset.csv")
    assert list(table["given"]) == [5, 0, 5, 5] and list(table["kept"]) == [4, 0, 4, 4]
    assert json.loads((tmp_path / "summary.json").read_text())["images_written"] == 12


def test_an_image_folder_release_is_read_image_by_image(tmp_path):
    release = tmp_path / "release"
    for name, tiles in faces(2, 3).items():
        for k, tile in enumerate(tiles):
            write_png(release / name / f"{name}_{k}.png", tile)
    spec = ReleasedDataset(folder=str(release), layout="image_folder", tile_size=None, grid=None)
    assert import_released_dataset(spec, tmp_path / "out", tmp_path / "out.csv")["images"] == 6
    assert np.array_equal(read_rgb(tmp_path / "out" / "id1" / "2.png"), faces(2, 3)["id1"][2])
    write_png(release / "loose.png", faces(1, 1)["id0"][0])
    with pytest.raises(ReleasedDatasetError, match="outside identity folders .loose.png"):
        import_released_dataset(spec, tmp_path / "out2", tmp_path / "out2.csv")


def test_a_missing_or_empty_release_and_a_block_layout_without_its_grid_are_refused(tmp_path):
    with pytest.raises(ReleasedDatasetError, match="does not exist"):
        import_released_dataset(ReleasedDataset(str(tmp_path / "nowhere"), "blocks", TILE, (1, 1)),
                                tmp_path / "out", tmp_path / "out.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReleasedDatasetError, match="holds no images"):
        import_released_dataset(ReleasedDataset(str(tmp_path / "empty"), "blocks", TILE, (1, 1)),
                                tmp_path / "out", tmp_path / "out.csv")
    spec = blocks(tmp_path / "twice")
    write_png(tmp_path / "twice" / "id0.jpg", read_rgb(tmp_path / "twice" / "id0.png"))
    with pytest.raises(ReleasedDatasetError, match=r"two blocks for identity 'id0' \(id0.jpg, id0.png\)"):
        import_released_dataset(spec, tmp_path / "out", tmp_path / "out.csv")
    with pytest.raises(ValueError, match="needs tile_size and grid"):
        ReleasedDataset(str(tmp_path), "blocks", None, None)
