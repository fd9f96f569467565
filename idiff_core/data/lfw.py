"""LFW benchmark acquisition: the images in LFW's layout plus the 10-fold `pairs.txt`, checked.

Source: a local folder (`<Name>/<Name>_0001.jpg`, the official `lfw` or `lfw-deepfunneled` trees)
or the official archive (`lfw.tgz` / `lfw-deepfunneled.tgz`, a path or a URL, extracted safely).
`pairs.txt` comes from a path or URL. Every image the pairs name must exist, or the error lists them.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .benchmarks import LfwPair, lfw_image_path, read_lfw_pairs
from ..io import IMAGE_EXTENSIONS, link_or_copy
from . import DatasetError
from .archive import safe_extract
from .download import fetch

log = logging.getLogger(__name__)

SOURCES = ("folder", "archive")
SHOW_NAMES = 20


@dataclass(frozen=True)
class LFWSettings:
    """Where LFW's images and pairs come from, and how many pairs the protocol must hold."""

    source: str               # folder | archive
    images: str               # the image folder, or lfw.tgz / lfw-deepfunneled.tgz (path or URL)
    images_md5: str | None    # MD5 of the archive; None = not checked (folders are not hashed)
    pairs: str                # pairs.txt (path or URL)
    pairs_md5: str | None     # MD5 of pairs.txt; None = not checked
    expected_pairs: int       # pairs the file must list (official: 6000 = 10 folds x 600)
    download_retries: int     # retries per file after a transient network failure
    download_timeout_s: float  # seconds without data before a request is abandoned


def prepare_lfw(settings: LFWSettings, out_dir: str | os.PathLike, *,
                download_dir: str | os.PathLike | None = None) -> Path:
    """Write `<out>/images/<Name>/<Name>_NNNN.jpg` and `<out>/pairs.txt`; return the pairs path.

    Archives and downloads are kept in `download_dir` (default `<out_dir>.download`) so a re-run
    resumes instead of fetching them again.
    """
    if settings.source not in SOURCES:
        raise ValueError(f"lfw source must be one of {SOURCES}, got {settings.source!r}")
    out_dir = Path(out_dir)
    cache = Path(download_dir) if download_dir is not None else Path(f"{out_dir}.download")
    fetched_pairs = fetch(settings.pairs, cache / "pairs.txt", md5=settings.pairs_md5,
                          retries=settings.download_retries, timeout=settings.download_timeout_s).path
    images = out_dir / "images"
    shutil.rmtree(images, ignore_errors=True)
    if settings.source == "folder":
        _link_people(find_lfw_root(Path(settings.images).expanduser()), images)
    else:
        _extract_people(settings, cache, out_dir, images)
    _check_pairs(fetched_pairs, images, settings)
    pairs = out_dir / "pairs.txt"
    link_or_copy(fetched_pairs, pairs)
    return pairs


def find_lfw_root(folder: Path) -> Path:
    """The folder whose subfolders are people (`<Name>/<Name>_NNNN.jpg`), at or below `folder`."""
    if not folder.is_dir():
        raise DatasetError(f"LFW image folder {folder} does not exist. Fix: set lfw images to the folder "
                           f"holding <Name>/<Name>_0001.jpg")
    roots = {p.parent.parent for p in folder.rglob("*") if _is_person_image(p)}
    if len(roots) != 1:
        found = ", ".join(sorted(str(r) for r in roots)[:5]) or "none"
        raise DatasetError(f"expected exactly one LFW image tree (<Name>/<Name>_0001.jpg) under {folder}, "
                           f"found {len(roots)}: {found}. Fix: point lfw images at one LFW tree")
    return roots.pop()


def _is_person_image(path: Path) -> bool:
    return (path.suffix.lower() in IMAGE_EXTENSIONS and path.stem.rsplit("_", 1)[0] == path.parent.name
            and path.stem.rsplit("_", 1)[-1].isdigit() and path.is_file())


def _link_people(root: Path, images: Path) -> None:
    """Hard-link (or copy) every person's images from `root` into `images`."""
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(person.iterdir()):
            if _is_person_image(path):
                (images / person.name).mkdir(parents=True, exist_ok=True)
                link_or_copy(path, images / person.name / path.name)


def _extract_people(settings: LFWSettings, cache: Path, out_dir: Path, images: Path) -> None:
    """Fetch the archive into the cache, extract it safely, and move its image tree to `images`."""
    name = Path(urllib.parse.urlparse(settings.images).path).name or "lfw-archive"
    archive = fetch(settings.images, cache / name, md5=settings.images_md5, retries=settings.download_retries,
                    timeout=settings.download_timeout_s).path
    staging = out_dir / ".extract"
    shutil.rmtree(staging, ignore_errors=True)
    safe_extract(archive, staging)
    os.replace(find_lfw_root(staging), images)
    shutil.rmtree(staging)


def missing_pair_images(pairs: list[LfwPair], images: Path) -> list[str]:
    """`Name/Name_NNNN` of every image the pairs name that is not under `images` (LFW layout)."""
    missing = []
    for name, idx in sorted({(p.name1, p.idx1) for p in pairs} | {(p.name2, p.idx2) for p in pairs}):
        try:
            lfw_image_path(images, name, idx)
        except FileNotFoundError:
            missing.append(f"{name}/{name}_{idx:04d}")
    return missing


def _check_pairs(pairs_txt: Path, images: Path, settings: LFWSettings) -> None:
    """Every pair image must exist, and the file must hold `expected_pairs` pairs."""
    try:
        pairs, folds = read_lfw_pairs(pairs_txt)
    except ValueError as err:
        raise DatasetError(f"{err}. Fix: check the lfw pairs location in the config") from err
    if len(pairs) != settings.expected_pairs:
        raise DatasetError(f"{settings.pairs} lists {len(pairs)} pairs in {folds} folds, expected "
                           f"{settings.expected_pairs}. Fix: use LFW's pairs.txt or set expected_pairs")
    missing = missing_pair_images(pairs, images)
    if missing:
        more = f" ... and {len(missing) - SHOW_NAMES} more" if len(missing) > SHOW_NAMES else ""
        raise DatasetError(f"{len(missing)} image(s) named in {settings.pairs} are not in the LFW images "
                           f"({settings.images}): {', '.join(missing[:SHOW_NAMES])}{more}. Fix: use the "
                           f"complete LFW image set matching this pairs.txt")
    log.info("LFW: %d pairs in %d folds, all images present under %s", len(pairs), folds, images)
