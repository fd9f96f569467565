"""The one bridge between a Snakemake job and an `idiff_core` stage function.

Workflow scripts hand their `snakemake` object to `run_job`; it tees the job's output into the
rule's log file, pins torch to the job's cores and decodes the rule's JSON settings. Nothing here
imports Snakemake: the object is only read by attribute.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import traceback
from typing import Any, Callable, Iterator, TextIO

from .runtime import resolve_device, set_threads


class _Tee:
    """A text stream that writes to several streams (the log file and the terminal)."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def tee_output(log_path: str | None) -> Iterator[None]:
    """Copy everything printed during the block to `log_path` as well as to the terminal."""
    if not log_path:
        yield
        return
    with open(log_path, "a", buffering=1) as log:
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(log, saved[0]), _Tee(log, saved[1])
        try:
            yield
        except BaseException:
            traceback.print_exc()  # into the log too, where the rule's error message points
            raise
        finally:
            sys.stdout, sys.stderr = saved


def run_job(snakemake: Any, stage: Callable[[Any, dict, str], None]) -> None:
    """Run `stage(snakemake, settings, device)` with logging, threads and settings set up.

    `settings` is the rule's `params.settings` JSON decoded; `device` comes from `params.device`
    (default CPU), resolved so `auto` picks a GPU when the job has one.
    """
    log_path = snakemake.log[0] if len(snakemake.log) else None
    with tee_output(log_path):
        rule = getattr(snakemake, "rule", "job")
        print(f"[idiff] stage {rule}: started with {snakemake.threads} thread(s)", file=sys.stderr)
        start = time.time()
        set_threads(snakemake.threads)
        params = snakemake.params
        settings = json.loads(params.settings) if hasattr(params, "settings") else {}
        device = str(resolve_device(getattr(params, "device", "cpu")))
        stage(snakemake, settings, device)
        print(f"[idiff] stage {rule}: finished in {time.time() - start:.1f} s", file=sys.stderr)
