"""IDiff-Face's published synthetic datasets, split into the identity folders assembly reads.

The original stores a dataset as identity blocks: one image per identity, named by it, holding the
identity's images as a grid of equal tiles in row-major order with no gap between them (torchvision's
`make_grid`, padding 0). Where the images do not fill the last row, the rest of it is black
(`sample.py` writes 4 columns of 128 px, so 50 images leave 2 black tiles; `align.py` rewrites each
block as 5 columns of 112 px). Its splitter crashes and writes a flat folder; here block `<stem>.png`
becomes `<stem>/<k>.png`, k in tile order, and a black tile (every pixel 0) is left out: it is
the grid's filler, never a face, and training on it is the original's known fault. A release in
ImageFolder form (`<identity>/<image>`) is read image by image the same way.

Every image is decoded and written as PNG: an unreadable file is recorded (its identity then falls
short and assembly skips it, as after alignment), a block of the wrong size is an error naming it.
The manifest has the alignment manifest's columns, so assembly reads an imported dataset as it reads
an aligned shard; images used as released have status `given`.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .alignment import write_manifest
from .io import UnreadableImage, list_images, read_rgb, write_png

LAYOUTS = ("blocks", "image_folder")
GIVEN = "given"  # an image used as released (alignment's statuses: aligned, resized, dropped, unreadable)
SHOWN_PROBLEMS = 5


class ReleasedDatasetError(ValueError):
    """The folder does not hold the configured layout (a block of the wrong size, no images)."""


@dataclass(frozen=True)
class ReleasedDataset:
    """Config `datasets.<name>.released`, less `align` (the workflow aligns the imported images or not):
    where the images are and how they are laid out."""

    folder: str
    layout: str
    tile_size: int | None
    grid: tuple[int, int] | None  # rows, columns of every block

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown released dataset layout {self.layout!r}; expected one of {LAYOUTS}")
        if self.layout == "blocks" and (self.tile_size is None or self.grid is None):
            raise ValueError("a dataset of identity blocks needs tile_size and grid (rows, columns)")


def split_block(block: np.ndarray, tile_size: int, grid: tuple[int, int]) -> list[np.ndarray]:
    """The tiles of one identity block in row-major order, black filler tiles left out.

    The block must be exactly grid rows x columns tiles of `tile_size`: anything else means the
    configured grid is not the one the release was written with, and cutting would mix faces.
    """
    rows, columns = grid
    expected = (rows * tile_size, columns * tile_size)
    if block.shape[:2] != expected:
        raise ReleasedDatasetError(f"is {block.shape[0]} x {block.shape[1]} px, not {rows} x {columns} tiles of "
                                   f"{tile_size} px ({expected[0]} x {expected[1]})")
    tiles = [block[r * tile_size:(r + 1) * tile_size, c * tile_size:(c + 1) * tile_size]
             for r in range(rows) for c in range(columns)]
    return [tile for tile in tiles if tile.any()]


def _sources(spec: ReleasedDataset) -> list[tuple[str, Path]]:
    """(identity, image file) of every image of the release, in path order."""
    root = Path(spec.folder)
    if not root.is_dir():
        raise ReleasedDatasetError(f"released dataset folder {root} does not exist")
    files = list_images(root, recursive=spec.layout == "image_folder")
    if spec.layout == "image_folder":
        flat = [f for f in files if f.parent == root]
        if flat:
            raise ReleasedDatasetError(f"{root} holds images outside identity folders ({flat[0].name}, ...); "
                                       f"layout image_folder reads <identity>/<image>")
        sources = [(f.relative_to(root).parts[0], f) for f in files]
    else:
        sources = [(f.stem, f) for f in files]
        twice = sorted(stem for stem, n in Counter(identity for identity, _ in sources).items() if n > 1)
        if twice:
            raise ReleasedDatasetError(f"{root} holds two blocks for identity {twice[0]!r} "
                                       f"({', '.join(f.name for i, f in sources if i == twice[0])}); keep one")
    if not sources:
        raise ReleasedDatasetError(f"{root} holds no images (layout {spec.layout})")
    return sources


def _import_file(spec: ReleasedDataset, out_dir: Path, identity: str, path: Path,
                 first: int) -> tuple[list[dict], str | None, int]:
    """Write the faces of one released file as `<identity>/<first + i>.png`: (manifest records, the
    block's size problem or None, black filler tiles left out)."""
    try:
        image = read_rgb(path)
    except UnreadableImage as err:
        return [{"path": path.relative_to(spec.folder).as_posix(), "identity": identity, "status": "unreadable",
                 "n_faces": 0, "prob": None, "error": str(err)}], None, 0
    faces = [image]
    if spec.layout == "blocks":
        try:
            faces = split_block(image, spec.tile_size, tuple(spec.grid))
        except ReleasedDatasetError as err:
            return [], f"{path.name} {err}", 0
    records = []
    for k, face in enumerate(faces, start=first):
        write_png(out_dir / identity / f"{k}.png", face)
        records.append({"path": f"{identity}/{k}.png", "identity": identity, "status": GIVEN, "n_faces": 0,
                        "prob": None, "error": ""})
    filler = spec.grid[0] * spec.grid[1] - len(faces) if spec.layout == "blocks" else 0
    return records, None, filler


def import_released_dataset(spec: ReleasedDataset, out_dir: str | os.PathLike, manifest_csv: str | os.PathLike,
                            threads: int = 1) -> dict:
    """Write `<out_dir>/<identity>/<k>.png` for every image of the release and its manifest; return counts.

    k numbers an identity's images in tile order (blocks) or file-name order (image folders). Files
    are decoded and written by `threads` threads (PNG coding runs outside Python's lock); the result
    does not depend on their number.
    """
    sources = _sources(spec)
    seen: dict[str, int] = {}
    jobs = []
    for identity, path in sources:  # an identity's k-th file starts at k (image folders: one image per file)
        jobs.append((identity, path, seen.get(identity, 0)))
        seen[identity] = seen.get(identity, 0) + 1
    with ThreadPoolExecutor(max(1, threads)) as pool:
        results = list(pool.map(lambda job: _import_file(spec, Path(out_dir), *job), jobs))
    wrong_size = [problem for _, problem, _ in results if problem]
    if wrong_size:
        raise ReleasedDatasetError(
            f"{len(wrong_size)} block(s) in {spec.folder} do not fit tile_size {spec.tile_size} and grid "
            f"{list(spec.grid)}: " + "; ".join(wrong_size[:SHOWN_PROBLEMS])
            + ("; ..." if len(wrong_size) > SHOWN_PROBLEMS else "")
            + ". Set datasets.<name>.released.tile_size and grid to the release's (IDiff-Face's aligned 50-image "
              "blocks: 112 and [10, 5])")
    records = [record for file_records, _, _ in results for record in file_records]
    write_manifest(manifest_csv, records)
    counts = {"identities": len({r["identity"] for r in records}),
              "images": sum(r["status"] == GIVEN for r in records),
              "filler_tiles": sum(filler for _, _, filler in results),
              "unreadable": sum(r["status"] == "unreadable" for r in records)}
    print(f"[released] {counts['identities']} identities, {counts['images']} images, {counts['filler_tiles']} "
          f"black filler tiles left out, {counts['unreadable']} unreadable files")
    return counts
