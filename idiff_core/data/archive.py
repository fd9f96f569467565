"""Unpack zip and tar(.gz/.bz2/.xz) archives without letting any entry land outside the target.

Downloaded archives are untrusted: an entry named `../../x` or `/etc/x`, a link pointing out of the
target, or a device file must never be written. Every selected entry is checked before anything is
written; symbolic links are created last and re-checked on disk, so a chain of links cannot escape.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator


class UnsafeArchive(ValueError):
    """An archive entry would escape the target folder or is of a kind never extracted."""


@dataclass(frozen=True)
class _Entry:
    name: str                      # as stored in the archive
    kind: str                      # file | dir | symlink | hardlink | special
    link: str                      # symlink text, or the member a hardlink repeats
    open: Callable[[], IO[bytes]]  # the entry's bytes (files and hardlinks)


def archive_members(archive: str | os.PathLike) -> list[str]:
    """Names of the regular files in `archive`, in archive order."""
    with _entries(archive) as entries:
        return [e.name for e in entries if e.kind in ("file", "hardlink")]


def safe_extract(archive: str | os.PathLike, target_dir: str | os.PathLike,
                 members: Iterable[str] | None = None) -> list[Path]:
    """Extract `members` (default: all) of a zip or tar archive into `target_dir`; return the paths written.

    Raises UnsafeArchive, before writing anything, for an absolute or `..` path that leaves the
    target, a link pointing outside it, an entry under a link, or a device/fifo entry.
    """
    target = Path(target_dir)
    target.mkdir(parents=True, exist_ok=True)
    root = Path(os.path.realpath(target))
    with _entries(archive) as entries:
        wanted = set(members) if members is not None else None
        if wanted is not None:
            missing = sorted(wanted - {e.name for e in entries})
            if missing:
                raise KeyError(f"{archive} has no member(s) {missing[:10]}")
            entries = [e for e in entries if e.name in wanted]
        symlinks = {_inside(e.name, archive): e for e in entries if e.kind == "symlink"}
        planned = [(e, _check_entry(e, archive, symlinks)) for e in entries]
        written = []
        for entry, rel in planned:
            if entry.kind in ("file", "hardlink"):
                written.append(_write_file(entry, root, rel, archive))
            elif entry.kind == "dir":
                _real_dir(root, rel, archive, entry.name).mkdir(parents=True, exist_ok=True)
        links = [_write_symlink(entry, root, rel, archive) for entry, rel in planned if entry.kind == "symlink"]
        for link in links:  # final state: every link must still resolve inside the target
            if not _is_within(Path(os.path.realpath(link)), root):
                for made in links:
                    made.unlink(missing_ok=True)
                raise UnsafeArchive(f"{archive}: link {link.relative_to(root)} resolves outside {target}")
    return written + links


def _check_entry(entry: _Entry, archive, symlinks: dict) -> tuple[str, ...]:
    """The entry's path parts inside the target, or UnsafeArchive saying why it is refused."""
    if entry.kind == "special":
        raise UnsafeArchive(f"{archive}: entry {entry.name!r} is a device, fifo or other special file")
    rel = _inside(entry.name, archive)
    for depth in range(1, len(rel)):
        if rel[:depth] in symlinks:
            raise UnsafeArchive(f"{archive}: entry {entry.name!r} lies under the link {'/'.join(rel[:depth])!r}")
    if entry.kind == "symlink":
        if _is_absolute(entry.link):
            raise UnsafeArchive(f"{archive}: link {entry.name!r} points to the absolute path {entry.link!r}")
        _resolve(rel[:-1], entry.link, archive, entry.name, symlinks)
    elif entry.kind == "hardlink":
        _inside(entry.link, archive)
    return rel


def _inside(name: str, archive) -> tuple[str, ...]:
    """Path parts of an archive name relative to the target; refuses absolute and escaping names."""
    if not name or _is_absolute(name) or "\x00" in name:
        raise UnsafeArchive(f"{archive}: entry {name!r} has an absolute or empty path")
    parts = _resolve((), name, archive, name, {})
    if not parts:
        raise UnsafeArchive(f"{archive}: entry {name!r} names the target folder itself")
    return parts


def _resolve(start: tuple[str, ...], path: str, archive, name: str, symlinks: dict) -> tuple[str, ...]:
    """Walk `path` from `start`; refuse stepping above the target or through another link."""
    parts = list(start)
    steps = [p for p in re.split(r"[\\/]", path) if p not in ("", ".")]
    for i, step in enumerate(steps):
        if step == "..":
            if not parts:
                raise UnsafeArchive(f"{archive}: entry {name!r} resolves outside the target folder")
            parts.pop()
        else:
            parts.append(step)
        if tuple(parts) in symlinks and i < len(steps) - 1:
            raise UnsafeArchive(f"{archive}: link {name!r} passes through the link {'/'.join(parts)!r}")
    return tuple(parts)


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", path) is not None


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _real_dir(root: Path, rel: tuple[str, ...], archive, name: str) -> Path:
    """`root/rel`, after checking that what already exists on disk keeps it inside `root`."""
    path = root.joinpath(*rel)
    if not _is_within(Path(os.path.realpath(path)), root):
        raise UnsafeArchive(f"{archive}: entry {name!r} would be written outside {root} through an existing link")
    return path


def _write_file(entry: _Entry, root: Path, rel: tuple[str, ...], archive) -> Path:
    parent = _real_dir(root, rel[:-1], archive, entry.name)
    parent.mkdir(parents=True, exist_ok=True)
    dest = parent / rel[-1]
    if dest.is_symlink():
        dest.unlink()
    with entry.open() as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    return dest


def _write_symlink(entry: _Entry, root: Path, rel: tuple[str, ...], archive) -> Path:
    parent = _real_dir(root, rel[:-1], archive, entry.name)
    parent.mkdir(parents=True, exist_ok=True)
    dest = parent / rel[-1]
    if not _is_within(Path(os.path.realpath(parent / entry.link)), root):
        raise UnsafeArchive(f"{archive}: link {entry.name!r} -> {entry.link!r} resolves outside {root}")
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    os.symlink(entry.link, dest)
    return dest


@contextmanager
def _entries(archive: str | os.PathLike) -> Iterator[list[_Entry]]:
    """The entries of a zip or tar archive, readable while the context is open."""
    path = Path(archive)
    if not path.is_file():
        raise FileNotFoundError(f"archive {path} does not exist")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            yield [_zip_entry(zf, info) for info in zf.infolist()]
    elif tarfile.is_tarfile(path):
        with tarfile.open(path, "r:*") as tf:
            yield [_tar_entry(tf, member) for member in tf.getmembers()]
    else:
        raise ValueError(f"{path} is neither a zip nor a tar archive (is the download complete?)")


def _zip_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Entry:
    mode = info.external_attr >> 16
    if info.is_dir():
        return _Entry(info.filename, "dir", "", lambda: None)
    if stat.S_ISLNK(mode):
        return _Entry(info.filename, "symlink", zf.read(info).decode("utf-8", "replace"), lambda: None)
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return _Entry(info.filename, "special", "", lambda: None)
    return _Entry(info.filename, "file", "", lambda: zf.open(info))


def _tar_entry(tf: tarfile.TarFile, member: tarfile.TarInfo) -> _Entry:
    if member.isdir():
        return _Entry(member.name, "dir", "", lambda: None)
    if member.issym():
        return _Entry(member.name, "symlink", member.linkname, lambda: None)
    if member.islnk():
        return _Entry(member.name, "hardlink", member.linkname, lambda: tf.extractfile(member))
    if member.isreg():
        return _Entry(member.name, "file", "", lambda: tf.extractfile(member))
    return _Entry(member.name, "special", "", lambda: None)
