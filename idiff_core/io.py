"""Files shared by the stages: images, embedding matrices, atomic writes, links and digests.

Every file a stage writes goes through `atomic_path`, so a killed job never leaves a half-written
file that a resumed job would mistake for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
CHUNK_BYTES = 1 << 20


class UnreadableImage(ValueError):
    """An image file that exists but cannot be decoded (truncated, corrupt, not an image)."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file is created with the usual permissions (0666 less the umask), not mkstemp's 0600, so
    results on a shared file system stay readable by the user's group, like any file they write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.part{path.suffix}"
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass(frozen=True)
class FileDigests:
    """A file's size and digests, read once (a download checks them; a model file is named by its SHA-256)."""

    path: Path
    size: int
    md5: str
    sha256: str


def file_digests(path: str | os.PathLike) -> FileDigests:
    """Size, MD5 and SHA-256 of `path`, read once."""
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return FileDigests(Path(path), size, md5.hexdigest(), sha256.hexdigest())


def link_or_copy(source: str | os.PathLike, dest: str | os.PathLike, *, atomic: bool = False) -> None:
    """Make `dest` hold `source`'s bytes: a hard link (no extra disk), or a copy across file systems.

    `atomic`: build it beside `dest` and rename it into place, for outputs a killed job must not leave
    half-copied.
    """
    if atomic:
        with atomic_path(dest) as tmp:
            link_or_copy(source, tmp)
        return
    dest = Path(dest)
    dest.unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode any image mode (grayscale, palette, RGBA, CMYK, 16-bit) to an HxWx3 uint8 RGB array."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(img, dtype=np.float64)
                img = Image.fromarray((arr / max(arr.max(), 1.0) * 255.0).astype(np.uint8))
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                img = Image.alpha_composite(background, rgba)
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UnreadableImage(f"cannot read image {path}: {err}") from err


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an HxWx3 (or HxW) uint8 array as PNG, atomically.

    zlib level 1: lossless like any level, 3x faster to write than the default 6 for 8 % larger files
    (the pipeline writes every face it renders, samples and aligns).
    """
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", compress_level=1)


def write_image_grid(rows: Sequence[Sequence[np.ndarray]], path: str | os.PathLike, padding: int = 2) -> None:
    """Tile uint8 HxWx3 images into a PNG/JPEG grid, one list per row (short rows padded black).

    Every image is resized (area interpolation) to the first one's size, so real photos and
    generated or aligned faces of other sizes can share a grid.
    """
    rows = [list(r) for r in rows if len(r)]
    if not rows:
        raise ValueError(f"no images to put in the grid {path}")
    height, width = rows[0][0].shape[:2]
    columns = max(len(r) for r in rows)
    grid = np.zeros((len(rows) * (height + padding) + padding, columns * (width + padding) + padding, 3), np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            if image.shape[:2] != (height, width):
                image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            top, left = padding + i * (height + padding), padding + j * (width + padding)
            grid[top:top + height, left:left + width] = image
    write_png(path, grid)


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """All image files under `root`, sorted by their path relative to `root` (stable across machines)."""
    root = Path(root)
    pattern = "**/*" if recursive else "*"
    found = [p for p in root.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def save_matrix(path: str | os.PathLike, names: Sequence[str], matrix: np.ndarray, **meta) -> None:
    """Write names + a float32 matrix (one row per name) + JSON metadata as one non-pickle `.npz`."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(names):
        raise ValueError(f"matrix shape {matrix.shape} does not match {len(names)} names")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, names=np.asarray(list(names), dtype=str), matrix=matrix,
                     meta=np.asarray(json.dumps(meta, sort_keys=True)))


def load_matrix(path: str | os.PathLike) -> tuple[list[str], np.ndarray, dict]:
    """Read a file written by `save_matrix`: (names, float32 matrix, metadata)."""
    with np.load(path, allow_pickle=False) as data:
        return [str(n) for n in data["names"]], data["matrix"].astype(np.float32), json.loads(str(data["meta"]))
