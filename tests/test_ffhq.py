"""prepare_ffhq from FFHQ's metadata (served on 127.0.0.1), from archives and from local folders."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from idiff_core.data import DatasetError
from idiff_core.data.download import ChecksumMismatch
from idiff_core.data.ffhq import FFHQSettings, prepare_ffhq
from idiff_core.settings import settings_from_dict
from test_download import http_server  # noqa: F401  (fixture)


def png_bytes(index: int, side: int, noise: float = 55.0) -> bytes:
    """A distinct smooth-plus-noise RGB PNG per index."""
    rng = np.random.default_rng(index)
    ramp = np.linspace(0, 200, side, dtype=np.float32)
    pixels = ramp[None, :, None] + ramp[:, None, None] * 0.2 + rng.uniform(0, noise, (side, side, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def settings(**changes) -> FFHQSettings:
    values = dict(source="folder", location="", location_md5=None, location_size=None, variant="thumbnails128",
                  expected_count=4, image_size=128, download_retries=0, download_timeout_s=5.0)
    values.update(changes)
    return settings_from_dict(FFHQSettings, values)


def read_manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def serve_ffhq(server, count: int, corrupt: set[int] = frozenset()) -> tuple[dict[int, bytes], bytes]:
    """Put `count` thumbnails and their metadata json on the server; `corrupt` ones differ from their MD5."""
    thumbs, meta = {}, {}
    for i in range(count):
        thumbs[i] = png_bytes(i, 128)
        name = f"thumbnails128x128/{i - i % 1000:05d}/{i:05d}.png"
        server.files[name] = thumbs[i][:-7] + b"garbage" if i in corrupt else thumbs[i]
        meta[str(i)] = {"category": "training" if i < 3 else "validation",
                        "metadata": {"author": "someone"},
                        "image": {"file_url": server.url(f"images/{i}.png"), "file_path": f"images1024x1024/{i}.png",
                                  "file_size": 1, "file_md5": "0" * 32, "pixel_size": [1024, 1024]},
                        "thumbnail": {"file_url": server.url(name), "file_path": name, "file_size": len(thumbs[i]),
                                      "file_md5": md5(thumbs[i]), "pixel_size": [128, 128]}}
    blob = json.dumps(meta).encode()
    server.files["ffhq-dataset-v2.json"] = blob
    return thumbs, blob


def test_metadata_download_gives_exact_thumbnails_and_manifest(http_server, tmp_path):
    thumbs, blob = serve_ffhq(http_server, 5)
    s = settings(source="metadata", location=http_server.url("ffhq-dataset-v2.json"), location_md5=md5(blob),
                 location_size=len(blob), expected_count=4)
    manifest = prepare_ffhq(s, tmp_path / "ffhq", threads=2)
    assert sorted(p.name for p in (tmp_path / "ffhq").glob("*.png")) == [f"{i:05d}.png" for i in range(4)]
    for i in range(4):
        assert (tmp_path / "ffhq" / f"{i:05d}.png").read_bytes() == thumbs[i]
    rows = read_manifest(tmp_path / "ffhq")
    assert manifest == tmp_path / "ffhq" / "manifest.csv"
    assert [r["stem"] for r in rows] == ["00000", "00001", "00002", "00003"]
    assert [r["md5"] for r in rows] == [md5(thumbs[i]) for i in range(4)]
    assert [r["category"] for r in rows] == ["training"] * 3 + ["validation"]
    assert {r["width"] for r in rows} == {"128"} and {r["resized"] for r in rows} == {"False"}
    assert "00004.png" not in str([r[0] for r in http_server.requests])  # only what was asked for


def test_corrupt_download_is_reported_by_name_and_good_files_are_kept(http_server, tmp_path):
    thumbs, blob = serve_ffhq(http_server, 4, corrupt={2})
    s = settings(source="metadata", location=http_server.url("ffhq-dataset-v2.json"), location_md5=md5(blob))
    with pytest.raises(DatasetError) as err:
        prepare_ffhq(s, tmp_path / "ffhq", threads=2)
    message = str(err.value)
    assert "00002.png" in message and md5(thumbs[2]) in message and "re-run" in message
    assert "00001.png" not in message
    # The server is fixed; the re-run fetches only the bad file.
    http_server.files["thumbnails128x128/00000/00002.png"] = thumbs[2]
    http_server.requests.clear()
    prepare_ffhq(s, tmp_path / "ffhq", threads=2)
    assert [r[0] for r in http_server.requests] == ["thumbnails128x128/00000/00002.png"]
    assert (tmp_path / "ffhq" / "00002.png").read_bytes() == thumbs[2]


def test_partial_download_resumes(http_server, tmp_path):
    thumbs, blob = serve_ffhq(http_server, 3)
    cache = tmp_path / "cache"
    part = cache / "thumbnails128x128" / "00001.png.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(thumbs[1][: len(thumbs[1]) // 2])
    s = settings(source="metadata", location=http_server.url("ffhq-dataset-v2.json"), expected_count=3)
    prepare_ffhq(s, tmp_path / "ffhq", threads=1, download_dir=cache)
    ranges = {path: rng for path, rng in http_server.requests}
    assert ranges["thumbnails128x128/00000/00001.png"] == f"bytes={len(thumbs[1]) // 2}-"
    assert (tmp_path / "ffhq" / "00001.png").read_bytes() == thumbs[1]
    assert not part.exists()


def test_wrong_metadata_checksum_is_refused(http_server, tmp_path):
    serve_ffhq(http_server, 2)
    s = settings(source="metadata", location=http_server.url("ffhq-dataset-v2.json"), location_md5="1" * 32)
    with pytest.raises(ChecksumMismatch, match="ffhq-dataset-v2.json"):
        prepare_ffhq(s, tmp_path / "ffhq", threads=1)


def test_metadata_without_enough_entries_is_refused(http_server, tmp_path):
    serve_ffhq(http_server, 2)
    s = settings(source="metadata", location=http_server.url("ffhq-dataset-v2.json"), expected_count=3)
    with pytest.raises(DatasetError, match="no entry for 1 wanted image.*00002"):
        prepare_ffhq(s, tmp_path / "ffhq", threads=1)


def test_folder_of_1024_images_is_resized_with_lanczos(tmp_path):
    src = tmp_path / "images1024x1024" / "00000"
    src.mkdir(parents=True)
    for i in range(2):
        (src / f"{i:05d}.png").write_bytes(png_bytes(i, 1024, noise=3.0))
    (tmp_path / "images1024x1024" / "LICENSE.txt").write_text("license")
    s = settings(location=str(tmp_path / "images1024x1024"), variant="images1024", expected_count=2)
    prepare_ffhq(s, tmp_path / "ffhq", threads=2)
    for i in range(2):
        expected = Image.open(src / f"{i:05d}.png").convert("RGB").resize((128, 128), Image.Resampling.LANCZOS)
        got = Image.open(tmp_path / "ffhq" / f"{i:05d}.png")
        assert got.size == (128, 128)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    rows = read_manifest(tmp_path / "ffhq")
    assert {r["resized"] for r in rows} == {"True"} and rows[1]["source"] == "00000/00001.png"


def test_missing_images_fail_the_count_check_by_name(tmp_path):
    for i in (0, 1, 3):
        (tmp_path / "thumbs" / f"{i:05d}.png").parent.mkdir(exist_ok=True)
        (tmp_path / "thumbs" / f"{i:05d}.png").write_bytes(png_bytes(i, 128))
    with pytest.raises(DatasetError, match=r"1 of 4 images are missing: 00002\.png"):
        prepare_ffhq(settings(location=str(tmp_path / "thumbs")), tmp_path / "ffhq", threads=1)


def test_bad_source_images_are_reported_by_name(tmp_path):
    thumbs = tmp_path / "thumbs"
    thumbs.mkdir()
    for i in range(4):
        (thumbs / f"{i:05d}.png").write_bytes(png_bytes(i, 128))
    (thumbs / "00001.png").write_bytes(png_bytes(1, 64))                # wrong size
    (thumbs / "00003.png").write_bytes(png_bytes(3, 128)[:300])          # truncated
    with pytest.raises(DatasetError) as err:
        prepare_ffhq(settings(location=str(thumbs)), tmp_path / "ffhq", threads=2)
    message = str(err.value)
    assert "2 FFHQ source image(s)" in message and "00001.png" in message and "64x64" in message
    assert "00003.png" in message and "00000.png" not in message


def test_fewer_images_than_the_folder_holds_and_stale_outputs_go(tmp_path):
    thumbs = tmp_path / "thumbs"
    thumbs.mkdir()
    for i in range(4):
        (thumbs / f"{i:05d}.png").write_bytes(png_bytes(i, 128))
    prepare_ffhq(settings(location=str(thumbs)), tmp_path / "ffhq", threads=1)
    prepare_ffhq(settings(location=str(thumbs), expected_count=2), tmp_path / "ffhq", threads=1)
    assert sorted(p.name for p in (tmp_path / "ffhq").glob("*.png")) == ["00000.png", "00001.png"]
    assert len(read_manifest(tmp_path / "ffhq")) == 2


def test_archive_served_over_http_is_extracted_safely(http_server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("thumbnails128x128/LICENSE.txt", "license")
        for i in range(4):
            zf.writestr(f"thumbnails128x128/00000/{i:05d}.png", png_bytes(i, 128))
    http_server.files["thumbnails128x128.zip"] = buffer.getvalue()
    s = settings(source="archive", location=http_server.url("thumbnails128x128.zip"),
                 location_md5=md5(buffer.getvalue()))
    prepare_ffhq(s, tmp_path / "ffhq", threads=2, download_dir=tmp_path / "cache")
    assert (tmp_path / "ffhq" / "00003.png").read_bytes() == png_bytes(3, 128)
    assert not (tmp_path / "cache" / "extracted").exists()
    assert read_manifest(tmp_path / "ffhq")[0]["source"] == "thumbnails128x128.zip:thumbnails128x128/00000/00000.png"


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="source must be one of"):
        prepare_ffhq(settings(source="torrent"), tmp_path / "ffhq", threads=1)
    with pytest.raises(DatasetError, match="does not exist"):
        prepare_ffhq(settings(location=str(tmp_path / "nowhere")), tmp_path / "ffhq", threads=1)
