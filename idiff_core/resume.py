"""Resumable state: where a stage keeps its partial work, and when that work may be reused.

A stage names its state by a key: its settings and what its inputs hold. Model, matrix and context
files count by their SHA-256, image folders by their images' names and sizes (hashing 70k faces
would cost more than the resume saves; a retrained model rewrites every image, and changes their
sizes). Alignment, which resumes image by image, keys each image by its SHA-256 (`file_key`).
Modification times never count, so a results folder copied with a plain `cp -r` (as users do
between scratch and project storage) resumes where it stopped, while new inputs start afresh.

The state lives in `<root>/<key digest>/`; anything else in `root` is stale (the run of an earlier
configuration) and is removed when a run starts, with a message naming what changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from .io import atomic_path, file_digests

KEY_FILE = "key.json"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _json_value(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)


def settings_key(settings: Any) -> str:
    """Digest of settings (dataclasses, at any depth, or JSON-able values) as sorted JSON."""
    return _digest(json.dumps(settings, sort_keys=True, default=_json_value))


def file_key(path: str | os.PathLike | None) -> str:
    """A file's content: its SHA-256 (`none` for an absent optional input)."""
    return "none" if path is None else file_digests(path).sha256[:16]


def images_key(root: str | os.PathLike, paths: Sequence[str | os.PathLike]) -> str:
    """Digest of the images' names (relative to `root`) and sizes."""
    root = Path(root)
    lines = (f"{Path(p).relative_to(root).as_posix()}\0{os.stat(p).st_size}" for p in paths)
    return _digest("\n".join(lines))


class StateFolder:
    """The folder of one key's state under `root`. A key maps part names (settings values, input
    keys) to JSON values; when state is dropped, the parts that differ are named."""

    def __init__(self, root: str | os.PathLike, key: Mapping[str, Any], stage: str):
        # through JSON once, so that the key compares equal to the one read back from key.json
        self.key: dict[str, Any] = json.loads(json.dumps(dict(key), sort_keys=True, default=str))
        self.root, self.stage = Path(root), stage
        self.path = self.root / _digest(json.dumps(self.key, sort_keys=True))

    def open(self) -> Path:
        """Make this key's folder (with its key.json) after removing every other key's; returns it.
        In a multi-process job only the main process opens it; the others read `path`."""
        stale = sorted(p for p in self.root.iterdir() if p != self.path) if self.root.is_dir() else []
        if stale:
            changed = sorted({part for other in stale for part in self._changed(other)})
            print(f"{self.stage}: dropping the state of an earlier configuration in {self.root}"
                  + (f" (other {', '.join(changed)})" if changed else ""), file=sys.stderr)
            for other in stale:
                if other.is_dir():
                    shutil.rmtree(other)
                else:
                    other.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        key_file = self.path / KEY_FILE
        if not key_file.is_file():
            with atomic_path(key_file) as tmp:
                tmp.write_text(json.dumps(self.key, indent=1, sort_keys=True))
        return self.path

    def _changed(self, other: Path) -> list[str]:
        """The key parts in which `other` (a stale state) differs from this key (none known without its key)."""
        try:
            old = json.loads((other / KEY_FILE).read_text())
        except (OSError, ValueError):
            return []
        return [k for k in self.key.keys() | old.keys() if old.get(k) != self.key.get(k)]
