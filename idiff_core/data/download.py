"""Fetch one file from a URL or a local path, resumably, and prove it is the file the config names.

Downloads stream into `<dest>.part` and continue it with an HTTP Range request after a kill or a
dropped connection; the part file becomes `<dest>` (atomic rename) only once its size and checksum
match. Only the standard library is used, so the download path has no extra dependency.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ..io import CHUNK_BYTES, FileDigests, file_digests, link_or_copy
from ..progress import progress

log = logging.getLogger(__name__)

USER_AGENT = "idiff-workflow (python urllib)"
# HTTP statuses worth retrying; any other 4xx/5xx means the URL itself is wrong.
TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A file could not be obtained; the message says which file and what to do about it."""


class ChecksumMismatch(DownloadError):
    """A file's size or digest differs from the one the config expects."""


def verify_checksum(path: str | os.PathLike, *, md5: str | None = None, sha256: str | None = None,
                    size: int | None = None, fix: str = "") -> FileDigests:
    """Hash `path`; raise ChecksumMismatch naming the file, expected and actual values, and `fix`."""
    found = file_digests(path)
    problems = [f"expected {what} {want}, got {got}"
                for what, want, got in (("size", size, found.size), ("md5", md5, found.md5),
                                        ("sha256", sha256, found.sha256))
                if want is not None and str(want).lower() != str(got).lower()]
    if problems:
        fix = fix or f"delete {path} and obtain the file again, or correct the checksum in the config"
        raise ChecksumMismatch(f"checksum mismatch for {path}: {'; '.join(problems)}. Fix: {fix}")
    return found


def local_source(source: str | os.PathLike) -> Path | None:
    """The local path `source` names (plain path or file:// URL), or None for a network URL."""
    text = os.fspath(source)
    scheme = urllib.parse.urlparse(text).scheme.lower()
    if scheme == "file":
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
    if scheme in ("http", "https", "ftp"):
        return None
    return Path(text).expanduser()


def fetch(source: str | os.PathLike, dest: str | os.PathLike, *, md5: str | None = None,
          sha256: str | None = None, size: int | None = None, retries: int, timeout: float,
          show_progress: bool = True) -> FileDigests:
    """Make `dest` a verified copy of `source` (URL, file:// URL or local path) and return its digests.

    A downloaded `dest` that matches (and came from the same URL, recorded in `<dest>.source`) is
    kept without network access; one that does not is fetched again. A local source is hard-linked
    (copied across file systems) every time. A checksum mismatch deletes the part file and raises an
    error saying how to fix it.
    """
    dest = Path(dest)
    source_text = os.fspath(source)
    fix = (f"re-run to fetch it again; if it fails again, check the URL/path '{source_text}' and the "
           f"checksum in the config, or obtain the file yourself and place it at {dest}")
    part = dest.with_name(dest.name + ".part")
    local = local_source(source_text)
    if md5 is None and sha256 is None:  # nothing proves the file's identity but where it came from
        _forget_other_source(dest, part, source_text)
    if dest.exists() and local is None:
        try:
            return verify_checksum(dest, md5=md5, sha256=sha256, size=size, fix=fix)
        except ChecksumMismatch as err:
            log.warning("%s; fetching it again", err)
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    if local is not None:
        if not local.is_file():
            raise DownloadError(f"local file {local} does not exist (or is not a file). Fix: {fix}")
        link_or_copy(local, part)
        found = _verified_part(part, dest, md5, sha256, size, fix)
    else:
        resumed = part.exists() and part.stat().st_size > 0
        _download(source_text, part, dest, size=size, retries=retries, timeout=timeout,
                  show_progress=show_progress)
        try:
            found = _verified_part(part, dest, md5, sha256, size, fix)
        except ChecksumMismatch:
            if not resumed:
                raise
            # The old part may belong to an earlier version of the file: start over once.
            log.warning("resumed download of %s does not match its checksum; downloading it again", dest)
            _download(source_text, part, dest, size=size, retries=retries, timeout=timeout,
                      show_progress=show_progress)
            found = _verified_part(part, dest, md5, sha256, size, fix)
    os.replace(part, dest)
    return FileDigests(dest, found.size, found.md5, found.sha256)


def _verified_part(part: Path, dest: Path, md5: str | None, sha256: str | None, size: int | None,
                   fix: str) -> FileDigests:
    """Check a finished part file; a bad one is deleted and reported under the final name."""
    _refuse_web_page(part, dest)
    try:
        return verify_checksum(part, md5=md5, sha256=sha256, size=size, fix=fix)
    except ChecksumMismatch as err:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(str(err).replace(str(part), str(dest), 1)) from None


def _forget_other_source(dest: Path, part: Path, source: str) -> None:
    """Record where `dest` comes from; drop a `dest` or part file that came from another source."""
    record = dest.with_name(dest.name + ".source")
    if record.exists() and record.read_text() != source:
        dest.unlink(missing_ok=True)
        part.unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(source)


def _refuse_web_page(part: Path, dest: Path) -> None:
    """Hosts like Google Drive answer quota or confirmation pages with HTTP 200: say so plainly."""
    if dest.suffix.lower() in (".html", ".htm"):
        return
    with open(part, "rb") as fh:
        head = fh.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        part.unlink()
        raise DownloadError(
            f"a web page arrived instead of the file for {dest} (a download quota, a login or a confirmation "
            f"page). Fix: try again later, or download the file in a browser and place it at {dest}")


def _download(url: str, part: Path, dest: Path, *, size: int | None, retries: int, timeout: float,
              show_progress: bool) -> None:
    """Complete `part` from `url`, resuming it, retrying transient failures with backoff."""
    bar = progress(total=size, desc=dest.name, unit="B") if show_progress else None
    if bar is not None:
        bar.unit_scale, bar.unit_divisor = True, 1024
    try:
        for attempt in range(retries + 1):
            try:
                _download_once(url, part, timeout, bar)
                return
            except urllib.error.HTTPError as err:
                if err.code not in TRANSIENT_HTTP:
                    raise DownloadError(f"HTTP {err.code} ({err.reason}) for {url}. Fix: check the URL in "
                                        f"the config, or obtain the file yourself and place it at {dest}") from None
                failure: Exception = err
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                failure = err
            if attempt < retries:
                wait = min(0.5 * 2 ** attempt, 30.0)
                log.warning("download of %s failed (%s); retry %d/%d in %.1f s", url, failure, attempt + 1,
                            retries, wait)
                time.sleep(wait)
        raise DownloadError(
            f"download of {url} failed after {retries + 1} attempt(s): {failure}. Fix: re-run (the partial "
            f"file {part} is kept and the download resumes), check the URL and the network, or obtain the "
            f"file yourself and place it at {dest}")
    finally:
        if bar is not None:
            bar.close()


def _download_once(url: str, part: Path, timeout: float, bar) -> None:
    """One HTTP request: append to `part` from its current size if the server honours Range."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:
            raise
        total = _total_from_content_range(err.headers.get("Content-Range", ""))
        err.close()
        if total == have:  # the part file already holds the whole file
            return
        part.unlink()  # the part is longer than the file or unusable: start over
        return _download_once(url, part, timeout, bar)
    with response:
        if response.status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range", ""))
            if start != have:  # unusable answer: drop the part so the retry starts over
                part.unlink()
                raise http.client.HTTPException(f"server resumed at byte {start}, expected {have}")
            mode = "ab"
        else:  # 200: the server ignored Range, so the body is the whole file
            have, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected_end = have + int(length) if length is not None else None
        if bar is not None:
            bar.total = expected_end if expected_end is not None else bar.total
            bar.n = have
            bar.refresh()
        written = have
        with open(part, mode) as fh:
            while chunk := response.read(CHUNK_BYTES):
                fh.write(chunk)
                written += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
    if expected_end is not None and written < expected_end:
        raise http.client.IncompleteRead(b"", expected_end - written)


def _start_from_content_range(header: str) -> int:
    match = re.match(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)", header)
    if not match:
        raise http.client.HTTPException(f"unusable Content-Range header {header!r}")
    return int(match.group(1))


def _total_from_content_range(header: str) -> int | None:
    match = re.search(r"/(\d+)\s*$", header)
    return int(match.group(1)) if match else None
