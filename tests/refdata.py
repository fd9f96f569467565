"""Where the shared reference fixtures and real faces are, and how tests discover them.

`$IDIFF_REFERENCE_DIR` (default `../shared/reference`) and `$IDIFF_FACES_DIR` (default
`../shared/faces`) may point elsewhere; tests skip cleanly when the folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path:
    return Path(os.environ.get("IDIFF_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def faces_dir() -> Path:
    return Path(os.environ.get("IDIFF_FACES_DIR", REPO.parent / "shared" / "faces"))


def discover(subdir: str, pattern: str) -> list:
    """pytest params for every fixture file `reference_dir()/subdir/pattern`; one skipping param if none."""
    folder = reference_dir() / subdir
    files = sorted(folder.glob(pattern)) if folder.is_dir() else []
    if not files:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no {pattern} fixtures in {folder}"))]
    return [pytest.param(f, id=f.name) for f in files]


def require(path: Path) -> Path:
    """Skip the calling test when `path` (a shared fixture file or folder) is absent."""
    if not path.exists():
        pytest.skip(f"shared fixture {path} not available")
    return path
