"""FFHQ at paper scale: 70,000 face images at 128x128 as one flat folder plus a manifest.

Sources: a local folder of FFHQ's `thumbnails128x128` or `images1024x1024` (flat, or FFHQ's
1000-per-subfolder layout), a local or remote archive of either, or a download file by file driven
by FFHQ's metadata `ffhq-dataset-v2.json` (each entry's `thumbnail` / `image` dict gives
`file_url`, `file_size` and `file_md5`; `category` is training or validation).

Images whose size differs from `image_size` (the 1024 images) are resized once with PIL's LANCZOS
filter (a windowed-sinc filter that widens its support when shrinking, i.e. antialiased); images
already at `image_size` are hard-linked or copied byte for byte, so FFHQ's own thumbnails keep
their published MD5. Output: `<out>/00000.png` ... and `<out>/manifest.csv`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..io import UnreadableImage, atomic_path, link_or_copy, read_rgb, write_png
from ..progress import progress
from . import DatasetError
from .archive import archive_members, safe_extract
from .download import DownloadError, fetch

log = logging.getLogger(__name__)

SOURCES = ("folder", "archive", "metadata")
# variant -> (key of the metadata entry, side length of the source images, folder name in FFHQ)
VARIANTS = {"thumbnails128": ("thumbnail", 128, "thumbnails128x128"),
            "images1024": ("image", 1024, "images1024x1024")}
STEM = re.compile(r"^(\d{5})\.png$")
TRAINING_IMAGES = 60_000  # FFHQ's README: the first 60,000 are training, the rest validation
MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("stem", "file", "width", "height", "md5", "resized", "category", "source")
SHOW_NAMES = 20


@dataclass(frozen=True)
class FFHQSettings:
    """Where FFHQ comes from and what the prepared folder must hold."""

    source: str                  # folder | archive | metadata
    location: str                # the folder, the archive (path or URL) or the metadata json (path or URL)
    location_md5: str | None     # MD5 of the archive / metadata json; None = not checked
    location_size: int | None    # its size in bytes; None = not checked
    variant: str                 # thumbnails128 | images1024 (resized to image_size)
    expected_count: int          # images 00000 .. expected_count-1 must all be present (paper: 70000)
    image_size: int              # side length of the prepared images (paper: 128)
    download_retries: int        # retries per file after a transient network failure
    download_timeout_s: float    # seconds without data before a request is abandoned


@dataclass(frozen=True)
class _Source:
    path: Path
    category: str
    origin: str      # what the manifest records as the image's source


def prepare_ffhq(settings: FFHQSettings, out_dir: str | os.PathLike, *, threads: int,
                 download_dir: str | os.PathLike | None = None) -> Path:
    """Fill `out_dir` with `expected_count` images `<00000>.png` at `image_size` and return the manifest path.

    Downloads and archives are kept in `download_dir` (default `<out_dir>.download`), so a re-run after
    a failure resumes: files already there with the right MD5 are not fetched again.
    """
    _check_settings(settings)
    out_dir = Path(out_dir)
    cache = Path(download_dir) if download_dir is not None else Path(f"{out_dir}.download")
    threads = max(1, int(threads))
    staging = None
    if settings.source == "folder":
        root = Path(settings.location).expanduser()
        if not root.is_dir():
            raise DatasetError(f"FFHQ folder {root} does not exist. Fix: set ffhq location to the folder "
                               f"holding {VARIANTS[settings.variant][2]} (00000.png ...)")
        sources = _find_images(root)
    elif settings.source == "archive":
        staging = cache / "extracted"
        sources = _extract_archive(settings, cache, staging)
    else:
        sources = _download_from_metadata(settings, cache, threads)
    rows = _write_images(sources, out_dir, settings, threads)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = out_dir / MANIFEST
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    log.info("FFHQ: %d images at %dx%d in %s", len(rows), settings.image_size, settings.image_size, out_dir)
    return manifest


def _check_settings(settings: FFHQSettings) -> None:
    if settings.source not in SOURCES:
        raise ValueError(f"ffhq source must be one of {SOURCES}, got {settings.source!r}")
    if settings.variant not in VARIANTS:
        raise ValueError(f"ffhq variant must be one of {sorted(VARIANTS)}, got {settings.variant!r}")
    if settings.expected_count < 1 or settings.image_size < 1:
        raise ValueError("ffhq expected_count and image_size must be positive")


def _find_images(root: Path) -> dict[int, _Source]:
    """FFHQ images under `root` by index, from `NNNNN.png` names, flat or in subfolders."""
    found: dict[int, _Source] = {}
    for path in sorted(root.rglob("*.png")):
        match = STEM.match(path.name)
        if not match or not path.is_file():
            continue
        index = int(match.group(1))
        if index in found:
            raise DatasetError(f"FFHQ image {path.name} appears twice: {found[index].path} and {path}. "
                               f"Fix: keep one FFHQ copy under {root}")
        found[index] = _Source(path, _category(index), path.relative_to(root).as_posix())
    return found


def _category(index: int) -> str:
    return "training" if index < TRAINING_IMAGES else "validation"


def _extract_archive(settings: FFHQSettings, cache: Path, staging: Path) -> dict[int, _Source]:
    """Fetch (or link) the archive into the cache and extract only its FFHQ images, safely."""
    name = Path(urllib.parse.urlparse(settings.location).path).name or "ffhq-archive"
    archive = fetch(settings.location, cache / name, md5=settings.location_md5, size=settings.location_size,
                    retries=settings.download_retries, timeout=settings.download_timeout_s).path
    shutil.rmtree(staging, ignore_errors=True)  # a killed extraction may have left partial files
    members = [m for m in archive_members(archive) if STEM.match(m.replace("\\", "/").rsplit("/", 1)[-1])]
    safe_extract(archive, staging, members)
    sources = _find_images(staging)
    return {i: _Source(s.path, s.category, f"{name}:{s.origin}") for i, s in sources.items()}


def _download_from_metadata(settings: FFHQSettings, cache: Path, threads: int) -> dict[int, _Source]:
    """Download each wanted image listed in ffhq-dataset-v2.json into the cache, MD5-checked."""
    metadata = fetch(settings.location, cache / "ffhq-dataset-v2.json", md5=settings.location_md5,
                     size=settings.location_size, retries=settings.download_retries,
                     timeout=settings.download_timeout_s).path
    key, _, folder = VARIANTS[settings.variant]
    specs = _metadata_specs(metadata, key, settings.expected_count)
    targets = {i: cache / folder / f"{i:05d}.png" for i in specs}

    def download(index: int) -> str | None:
        spec = specs[index]
        try:
            fetch(spec["file_url"], targets[index], md5=spec["file_md5"], size=spec["file_size"],
                  retries=settings.download_retries, timeout=settings.download_timeout_s, show_progress=False)
        except DownloadError as err:
            return f"{index:05d}.png: {err}"
        return None

    with ThreadPoolExecutor(threads) as pool:
        failures = [f for f in progress(pool.map(download, sorted(specs)), total=len(specs),
                                        desc=f"FFHQ {settings.variant}", unit="file") if f]
    if failures:
        raise DatasetError(
            f"{len(failures)} of {len(specs)} FFHQ files could not be obtained with the right MD5:\n  "
            + "\n  ".join(failures[:SHOW_NAMES]) + _more(failures)
            + f"\nFix: re-run (the {len(specs) - len(failures)} good files in {cache / folder} are kept and "
              f"skipped), or place the named files there yourself.")
    return {i: _Source(targets[i], specs[i]["category"], specs[i]["file_url"]) for i in specs}


def _metadata_specs(metadata: Path, key: str, count: int) -> dict[int, dict]:
    """Index -> download spec (url, size, md5, category) for the first `count` images."""
    try:
        with open(metadata, "rb") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"FFHQ metadata {metadata} is not valid JSON ({err}). Fix: delete it and re-run, "
                           f"or check the metadata location in the config") from err
    specs = {}
    for name, entry in data.items():
        if not name.isdigit() or int(name) >= count:
            continue
        try:
            item = entry[key]
            specs[int(name)] = {"file_url": str(item["file_url"]), "file_md5": str(item["file_md5"]),
                                "file_size": int(item["file_size"]), "category": str(entry["category"])}
        except (KeyError, TypeError, ValueError) as err:
            raise DatasetError(f"FFHQ metadata {metadata}: entry {name} lacks {key}.file_url/file_size/"
                               f"file_md5 or category ({err!r}). Fix: use FFHQ's ffhq-dataset-v2.json") from err
    missing = [f"{i:05d}" for i in range(count) if i not in specs]
    if missing:
        raise DatasetError(f"FFHQ metadata {metadata} lists no entry for {len(missing)} wanted image(s): "
                           f"{', '.join(missing[:SHOW_NAMES])}{_more(missing)}. Fix: lower expected_count or "
                           f"use the complete ffhq-dataset-v2.json")
    return specs


def _write_images(sources: dict[int, _Source], out_dir: Path, settings: FFHQSettings,
                  threads: int) -> list[dict]:
    """Write every wanted image at `image_size`; report all missing or bad source files by name."""
    count = settings.expected_count
    missing = [f"{i:05d}.png" for i in range(count) if i not in sources]
    if missing:
        raise DatasetError(
            f"FFHQ is incomplete: {len(missing)} of {count} images are missing: "
            f"{', '.join(missing[:SHOW_NAMES])}{_more(missing)}. Fix: complete the source "
            f"({settings.source} {settings.location}) or re-run the download; expected_count is {count}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir, count)

    def write(index: int) -> dict | str:
        try:
            return _write_one(sources[index], out_dir / f"{index:05d}.png", settings)
        except (UnreadableImage, ValueError, OSError) as err:
            return f"{index:05d}.png ({sources[index].path}): {err}"

    with ThreadPoolExecutor(threads) as pool:
        results = list(progress(pool.map(write, range(count)), total=count, desc="FFHQ images", unit="img"))
    bad = [r for r in results if isinstance(r, str)]
    if bad:
        raise DatasetError(
            f"{len(bad)} FFHQ source image(s) are corrupt or of the wrong size:\n  "
            + "\n  ".join(bad[:SHOW_NAMES]) + _more(bad)
            + "\nFix: replace these files with good copies (or delete them from the download folder and "
              "re-run the download).")
    return results


def _write_one(source: _Source, dest: Path, settings: FFHQSettings) -> dict:
    """Copy or resize one image; the row of the manifest describing the result."""
    size = settings.image_size
    want = VARIANTS[settings.variant][1]
    if not dest.exists() or _image_size(dest) != (size, size):
        with Image.open(source.path) as img:
            shape, mode, fmt = img.size, img.mode, img.format
        if shape != (want, want):
            raise ValueError(f"is {shape[0]}x{shape[1]}, expected {want}x{want} for FFHQ {settings.variant}")
        pixels = read_rgb(source.path)  # decodes the whole file: truncated files fail here
        if shape == (size, size) and mode == "RGB" and fmt == "PNG":
            link_or_copy(source.path, dest, atomic=True)
        else:
            resized = Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS)
            write_png(dest, np.asarray(resized))
    with Image.open(dest) as img:
        width, height = img.size
    if (width, height) != (size, size):
        raise ValueError(f"prepared image {dest} is {width}x{height}, expected {size}x{size}")
    return {"stem": dest.stem, "file": dest.name, "width": width, "height": height,
            "md5": hashlib.md5(dest.read_bytes()).hexdigest(),
            "resized": size != VARIANTS[settings.variant][1],
            "category": source.category, "source": source.origin}


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.size
    except OSError:
        return None


def _remove_stale(out_dir: Path, count: int) -> None:
    """Drop images left by an earlier run with a larger expected_count, so the folder holds exactly `count`."""
    for path in out_dir.glob("*.png"):
        match = STEM.match(path.name)
        if match and int(match.group(1)) >= count:
            path.unlink()


def _more(items: list) -> str:
    return f" ... and {len(items) - SHOW_NAMES} more" if len(items) > SHOW_NAMES else ""
