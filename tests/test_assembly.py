"""Dataset assembly: exactly W x D, short identities replaced, clear error when too few survive."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idiff_core.alignment import write_manifest
from idiff_core.assembly import assemble_dataset, natural_key


def _shard(root: Path, statuses: dict[str, list[str]]) -> tuple[Path, Path]:
    """An aligned shard: `<root>/<identity>/<j>.png` for usable statuses, and its manifest."""
    records = []
    for identity, per_image in statuses.items():
        for j, status in enumerate(per_image):
            relative = f"{identity}/{j}.png"
            if status in ("aligned", "resized"):
                (root / identity).mkdir(parents=True, exist_ok=True)
                pixel = (sum(map(ord, identity)) * 7 + j * 13) % 256  # a value tied to identity and image
                Image.fromarray(np.full((4, 4, 3), pixel, dtype=np.uint8)).save(root / relative)
            records.append({"path": relative, "identity": identity, "status": status,
                            "n_faces": int(status == "aligned"), "prob": 0.99 if status == "aligned" else None,
                            "error": ""})
    manifest = root.parent / f"{root.name}.csv"
    write_manifest(manifest, records)
    return root, manifest


def _pixels(path: Path) -> int:
    return int(np.asarray(Image.open(path))[0, 0, 0])


@pytest.fixture
def shards(tmp_path):
    ok = ["aligned", "resized", "aligned"]
    first = _shard(tmp_path / "s0", {"id2": ok, "id10": ["aligned", "dropped", "unreadable"], "id1": ok})
    second = _shard(tmp_path / "s1", {"id11": ["dropped", "aligned", "aligned"], "id12": ok})
    return [first, second]


def test_exact_width_and_depth_with_replacement(tmp_path, shards):
    out = tmp_path / "dataset"
    summary = assemble_dataset([s for s, _ in shards], [m for _, m in shards], out, tmp_path / "ids.csv",
                               tmp_path / "summary.json", identities=3, images_per_identity=2)
    # natural order id1, id2, id10, id11, id12: id10 has one usable image and is replaced by id11
    assert sorted(p.name for p in out.iterdir()) == ["id1", "id11", "id2"]
    assert all(sorted(p.name for p in (out / i).iterdir()) == ["0.png", "1.png"] for i in ("id1", "id11", "id2"))
    assert _pixels(out / "id11" / "0.png") == _pixels(tmp_path / "s1" / "id11" / "1.png")  # dropped j=0 skipped
    assert _pixels(out / "id2" / "1.png") == _pixels(tmp_path / "s0" / "id2" / "1.png")
    with open(tmp_path / "ids.csv", newline="") as fh:
        rows = {r["identity"]: r for r in csv.DictReader(fh)}
    assert list(rows) == ["id1", "id2", "id10", "id11", "id12"]
    assert rows["id10"] == {"identity": "id10", "images": "3", "detected": "1", "resized": "0", "dropped": "1",
                            "unreadable": "1", "given": "0", "kept": "0"}
    assert rows["id2"]["kept"] == "2" and rows["id2"]["resized"] == "1" and rows["id12"]["kept"] == "0"
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert summary["images_written"] == 6 and summary["identities_skipped_short"] == 1
    assert summary["images_sampled"] == 15 and summary["detection_rate"] == pytest.approx(9 / 15)

    # a rerun with a smaller width leaves no stale identity behind
    assemble_dataset([s for s, _ in shards], [m for _, m in shards], out, tmp_path / "ids.csv",
                     tmp_path / "summary.json", identities=1, images_per_identity=3)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["id1", "id1/0.png", "id1/1.png",
                                                                                "id1/2.png"]


def test_too_few_identities_says_how_much_to_oversample(tmp_path, shards):
    with pytest.raises(ValueError, match=r"found 4 of 5 identities with >= 2 usable images \(among 5 sampled") as err:
        assemble_dataset([s for s, _ in shards], [m for _, m in shards], tmp_path / "d", tmp_path / "i.csv",
                         tmp_path / "s.json", identities=5, images_per_identity=2)
    assert "sample at least 7 identities" in str(err.value) and "`oversample`" in str(err.value) and "at least 2" in str(err.value)
    assert not (tmp_path / "d").exists()


def test_bad_inputs_are_named(tmp_path, shards):
    (s0, m0), _ = shards
    with pytest.raises(ValueError, match="appears in two shards"):
        assemble_dataset([s0, s0.parent / "copy"], [m0, m0], tmp_path / "d", tmp_path / "i.csv",
                         tmp_path / "s.json", identities=1, images_per_identity=1)
    (s0 / "id1" / "0.png").unlink()
    with pytest.raises(FileNotFoundError, match="id1/0.png"):
        assemble_dataset([s0], [m0], tmp_path / "d", tmp_path / "i.csv", tmp_path / "s.json", 1, 1)


def test_natural_order():
    assert sorted(["10", "2", "id10", "id9", "001"], key=natural_key) == ["001", "2", "10", "id9", "id10"]
