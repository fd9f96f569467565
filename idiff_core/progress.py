"""Progress bars a user can follow in a Snakemake log: rate and ETA, a line at a time."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Iterable, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:  # torch is not imported at run time: the download jobs never load it
    import torch

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "",
             unit: str = "it") -> tqdm:
    """A tqdm bar on stderr; when stderr is a log file, a fresh line every ~10 s instead of redraws."""
    interactive = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=interactive,
                mininterval=0.5 if interactive else 10.0, ascii=not interactive)


def step_size(batch_size: int, device: torch.device, cpu_cap: int) -> int:
    """Items per step of a batched loop that advances a bar: the configured batch on an accelerator,
    at most `cpu_cap` (a few seconds of work) on the CPU, where a paper-size batch takes minutes and the
    bar would stand still. Results are the same up to the last float bits, which CPU kernels may
    round differently for another batch shape."""
    return batch_size if device.type != "cpu" else max(1, min(batch_size, cpu_cap))
