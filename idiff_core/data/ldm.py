"""The pretrained LDM `ffhq256` checkpoint whose first stage (VQ-f4) is IDiff-Face's autoencoder.

The latent-diffusion project publishes `ffhq.zip` (holding `model.ckpt`) without a checksum, so the
SHA-256 is optional in the config and the one observed is recorded next to the output, ready to be
pinned. A local zip or a bare `.ckpt` may be given instead of the URL.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..io import atomic_path, file_digests, link_or_copy
from . import DatasetError
from .archive import archive_members, safe_extract
from .download import fetch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LDMSettings:
    """Where the LDM ffhq256 checkpoint comes from."""

    location: str              # URL or local path of ffhq.zip, or a local model.ckpt
    sha256: str | None         # SHA-256 of that file; None = not checked (none is published)
    member: str                # the checkpoint's file name inside the zip (model.ckpt)
    download_retries: int      # retries after a transient network failure
    download_timeout_s: float  # seconds without data before a request is abandoned


def fetch_ldm_first_stage(settings: LDMSettings, out_ckpt: str | os.PathLike, *,
                          download_dir: str | os.PathLike | None = None) -> dict:
    """Write the LDM checkpoint to `out_ckpt`; return (and save as `<out_ckpt>.source.json`) its provenance.

    The zip is kept in `download_dir` (default `<out_ckpt>.download`) so an interrupted download resumes.
    """
    out_ckpt = Path(out_ckpt)
    cache = Path(download_dir) if download_dir is not None else Path(f"{out_ckpt}.download")
    name = Path(urllib.parse.urlparse(settings.location).path).name or "ffhq.zip"
    fetched = fetch(settings.location, cache / name, sha256=settings.sha256, retries=settings.download_retries,
                    timeout=settings.download_timeout_s)
    if settings.sha256 is None:
        log.warning("no sha256 configured for %s; observed sha256 %s (put it in the config to pin it)",
                    settings.location, fetched.sha256)
    if zipfile.is_zipfile(fetched.path):
        _extract_member(fetched.path, settings.member, out_ckpt, cache)
    else:
        link_or_copy(fetched.path, out_ckpt, atomic=True)
    record = {"location": settings.location, "source_file": fetched.path.name, "source_sha256": fetched.sha256,
              "source_size": fetched.size, "checkpoint_sha256": file_digests(out_ckpt).sha256,
              "checkpoint_size": out_ckpt.stat().st_size}
    with atomic_path(out_ckpt.with_name(out_ckpt.name + ".source.json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _extract_member(archive: Path, member: str, out_ckpt: Path, cache: Path) -> None:
    """Safely extract the one zip entry whose file name is `member` and move it to `out_ckpt`."""
    matches = [m for m in archive_members(archive) if m.replace("\\", "/").rsplit("/", 1)[-1] == member]
    if len(matches) != 1:
        raise DatasetError(f"{archive} holds {len(matches)} files named {member!r} ({matches[:5]}), expected "
                           f"exactly one. Fix: check the ldm location (the LDM ffhq256 zip) or member setting")
    staging = cache / "extracted"
    shutil.rmtree(staging, ignore_errors=True)
    (written,) = safe_extract(archive, staging, [matches[0]])
    out_ckpt.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_ckpt) as tmp:
        shutil.move(written, tmp)
    shutil.rmtree(staging)
