"""Progress bars a user can follow in a Snakemake log: rate and ETA, a line at a time."""

from __future__ import annotations

import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it") -> tqdm:
    """A tqdm bar on stderr; when stderr is a log file, a fresh line every ~10 s instead of redraws."""
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=interactive,
                mininterval=0.5 if interactive else 10.0, ascii=not interactive)
