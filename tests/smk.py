"""Running the workflow from tests: Snakemake in a subprocess on the smoke configuration."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, *args: str, configfiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`snakemake` on the smoke config (plus `configfiles`) in `workdir`; targets go in `args`.

    One thread per job: the smoke jobs are too small to gain from two, so two run side by side.
    """
    configs = [str(REPO / "config" / "smoke.yaml"), *configfiles]
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--max-threads", "1",
                           "-s", str(REPO / "Snakefile"),
                           "--directory", str(workdir), *args, "--configfile", *configs],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)


def jobs_of(dry_run: subprocess.CompletedProcess) -> set[str]:
    """The rule names a dry run (`-n`) would execute."""
    assert dry_run.returncode == 0, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]
    return set(re.findall(r"^(\w+)\s+\d+\s*$", dry_run.stdout, flags=re.M))
