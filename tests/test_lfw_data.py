"""prepare_lfw from a local LFW folder and from the official archive layout served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idiff_core.data import DatasetError
from idiff_core.data.archive import UnsafeArchive
from idiff_core.data.download import ChecksumMismatch
from idiff_core.data.lfw import LFWSettings, prepare_lfw
from idiff_core.settings import settings_from_dict
from test_download import http_server  # noqa: F401  (fixture)

PEOPLE = {"Ann_Smith": 3, "Bob_Jones": 2, "Cy_Twin": 1}
PAIRS = "1\t2\nAnn_Smith\t1\t3\nBob_Jones\t1\t2\nAnn_Smith\t2\tBob_Jones\t1\nCy_Twin\t1\tBob_Jones\t2\n"


def lfw_settings(**changes) -> LFWSettings:
    values = dict(source="folder", images="", images_md5=None, pairs="", pairs_md5=None, expected_pairs=4,
                  download_retries=0, download_timeout_s=5.0)
    values.update(changes)
    return settings_from_dict(LFWSettings, values)


def jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def fake_lfw_tgz(root: str, skip: str = "", extra: tarfile.TarInfo | None = None) -> bytes:
    """An LFW-style archive `<root>/<Name>/<Name>_NNNN.jpg`, optionally without one image."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for person, count in PEOPLE.items():
            for k in range(1, count + 1):
                name = f"{root}/{person}/{person}_{k:04d}.jpg"
                if name.endswith(skip) and skip:
                    continue
                data = jpeg(hash(name) % 1000)
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        if extra is not None:
            tf.addfile(extra)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("root", ["lfw", "lfw-deepfunneled"])
def test_official_archive_layout_served_over_http(http_server, tmp_path, root):
    blob = fake_lfw_tgz(root)
    http_server.files[f"lfw/{root}.tgz"] = blob
    http_server.files["lfw/pairs.txt"] = PAIRS.encode()
    s = lfw_settings(source="archive", images=http_server.url(f"lfw/{root}.tgz"), images_md5=md5(blob),
                     pairs=http_server.url("lfw/pairs.txt"), pairs_md5=md5(PAIRS.encode()))
    pairs = prepare_lfw(s, tmp_path / "lfw", download_dir=tmp_path / "dl")
    assert pairs.read_text() == PAIRS
    images = sorted(p.relative_to(tmp_path / "lfw" / "images").as_posix()
                    for p in (tmp_path / "lfw" / "images").rglob("*.jpg"))
    assert len(images) == 6 and images[0] == "Ann_Smith/Ann_Smith_0001.jpg"
    assert sorted(p.name for p in (tmp_path / "lfw").iterdir()) == ["images", "pairs.txt"]
    http_server.requests.clear()
    prepare_lfw(s, tmp_path / "lfw", download_dir=tmp_path / "dl")  # a re-run uses the kept downloads
    assert http_server.requests == []


def test_image_named_by_pairs_but_missing_is_reported(http_server, tmp_path):
    http_server.files["lfw.tgz"] = fake_lfw_tgz("lfw", skip="Ann_Smith_0003.jpg")
    http_server.files["pairs.txt"] = PAIRS.encode()
    s = lfw_settings(source="archive", images=http_server.url("lfw.tgz"), pairs=http_server.url("pairs.txt"))
    with pytest.raises(DatasetError, match="1 image.*Ann_Smith/Ann_Smith_0003"):
        prepare_lfw(s, tmp_path / "lfw")


def test_wrong_archive_checksum_and_wrong_pair_count_are_refused(http_server, tmp_path):
    http_server.files["lfw.tgz"] = fake_lfw_tgz("lfw")
    http_server.files["pairs.txt"] = PAIRS.encode()
    s = lfw_settings(source="archive", images=http_server.url("lfw.tgz"), images_md5="2" * 32,
                     pairs=http_server.url("pairs.txt"))
    with pytest.raises(ChecksumMismatch, match="lfw.tgz"):
        prepare_lfw(s, tmp_path / "lfw")
    s = lfw_settings(source="archive", images=http_server.url("lfw.tgz"), pairs=http_server.url("pairs.txt"),
                     expected_pairs=6000)
    with pytest.raises(DatasetError, match="lists 4 pairs in 1 folds, expected 6000"):
        prepare_lfw(s, tmp_path / "lfw")


def test_malicious_archive_is_refused(http_server, tmp_path):
    evil = tarfile.TarInfo("lfw/../../escaped.jpg")
    http_server.files["lfw.tgz"] = fake_lfw_tgz("lfw", extra=evil)
    http_server.files["pairs.txt"] = PAIRS.encode()
    s = lfw_settings(source="archive", images=http_server.url("lfw.tgz"), pairs=http_server.url("pairs.txt"))
    with pytest.raises(UnsafeArchive):
        prepare_lfw(s, tmp_path / "a" / "lfw")
    assert not list(tmp_path.rglob("escaped.jpg"))


def absent_images(images: Path, lines: list[str]) -> list[str]:
    """Independent check: images named by pair lines but absent from `images`, as `Name/Name_NNNN`."""
    wanted = set()
    for fields in (line.split() for line in lines if line.strip()):
        numbered = [(fields[0], fields[1]), (fields[0], fields[2])] if len(fields) == 3 else \
            [(fields[0], fields[1]), (fields[2], fields[3])]
        wanted |= {f"{name}/{name}_{int(k):04d}" for name, k in numbered}
    return sorted(w for w in wanted if not (images / f"{w}.jpg").exists())


def test_real_lfw10_folder_with_its_pairs(faces, tmp_path):
    """Succeeds when every pair image exists; otherwise names exactly the absent ones."""
    s = lfw_settings(images=str(faces / "lfw10"), pairs=str(faces / "lfw10_pairs.txt"), expected_pairs=200)
    missing = absent_images(faces / "lfw10", (faces / "lfw10_pairs.txt").read_text().splitlines()[1:])
    if missing:
        with pytest.raises(DatasetError, match=f"{len(missing)} image") as err:
            prepare_lfw(s, tmp_path / "lfw")
        assert all(m in str(err.value) for m in missing)
    else:
        assert prepare_lfw(s, tmp_path / "lfw").read_bytes() == (faces / "lfw10_pairs.txt").read_bytes()


def test_real_lfw10_folder_is_copied_whole(faces, tmp_path):
    lines = (faces / "lfw10_pairs.txt").read_text().splitlines()[1:]
    good = [line for line in lines if not absent_images(faces / "lfw10", [line])]
    matched = [line for line in good if len(line.split()) == 3][:20]
    mismatched = [line for line in good if len(line.split()) == 4][:20]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("\n".join(["1\t20"] + matched + mismatched) + "\n")
    s = lfw_settings(images=str(faces / "lfw10"), pairs=str(pairs), expected_pairs=40)
    assert prepare_lfw(s, tmp_path / "lfw").read_bytes() == pairs.read_bytes()
    copied = sorted((tmp_path / "lfw" / "images").rglob("*.jpg"))
    originals = sorted((faces / "lfw10").rglob("*.jpg"))
    assert [p.relative_to(tmp_path / "lfw" / "images") for p in copied] == \
        [p.relative_to(faces / "lfw10") for p in originals]
    assert len(copied) == 100 and copied[0].read_bytes() == originals[0].read_bytes()


def test_folder_lacking_a_person_is_reported(faces, tmp_path):
    partial = tmp_path / "partial"
    for person in sorted((faces / "lfw10").iterdir())[1:]:  # drop the first person
        (partial / person.name).mkdir(parents=True)
        for image in person.iterdir():
            (partial / person.name / image.name).write_bytes(image.read_bytes())
    s = lfw_settings(images=str(partial), pairs=str(faces / "lfw10_pairs.txt"), expected_pairs=200)
    with pytest.raises(DatasetError, match="Ariel_Sharon/Ariel_Sharon_00"):
        prepare_lfw(s, tmp_path / "lfw")


def test_folder_that_is_not_lfw_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "pairs.txt").write_text(PAIRS)
    with pytest.raises(DatasetError, match="found 0"):
        prepare_lfw(lfw_settings(images=str(tmp_path / "empty"), pairs=str(tmp_path / "pairs.txt")),
                    tmp_path / "lfw")
