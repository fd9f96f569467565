"""The whole DAG runs end to end on the smoke configuration, and reruns only what a change touches."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def snakemake(workdir: Path, *args: str, configfiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    configs = [str(REPO / "config" / "smoke.yaml"), *configfiles]
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(REPO / "Snakefile"),
                           "--directory", str(workdir), *args, "--configfile", *configs],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


def test_lfw_table_has_the_experiment_and_both_reference_rows(smoke_run):
    table = pd.read_csv(smoke_run / "results" / "eval" / "lfw.csv")
    assert list(table["experiment"]) == ["uniform_cpd25", "real_reference", "embedder"]
    assert list(table.columns[:3]) == ["experiment", "generator", "condition"]
    assert table["accuracy_mean"].between(0, 1).all() and (table["pairs"] == 100).all()
    row = table.iloc[0]
    assert (row["generator"], row["condition"], row["contexts"]) == ("ca_cpd25", "CA", "synthetic_uniform")
    assert (row["identities"], row["images_per_identity"]) == (6, 4)


def test_every_stage_left_its_files(smoke_run):
    results = smoke_run / "results"
    dataset = results / "datasets" / "uniform_cpd25"
    identities = sorted(p for p in dataset.iterdir() if p.is_dir())
    assert [p.name for p in identities] == [f"{i:05d}" for i in range(8)]
    assert all(len(list(p.glob("*.png"))) == 4 for p in identities)
    samples = list((results / "samples" / "uniform_cpd25").glob("shard*/*/*.png"))
    assert len(samples) == 10 * 4
    for name in ("separability", "leakage"):
        table = pd.read_csv(results / "eval" / f"{name}.csv")
        assert list(table["dataset"]) == ["uniform_cpd25"]
    logs = list((results / "logs").rglob("*.log"))
    assert logs and all("[idiff] stage" in log.read_text() for log in logs)


def jobs_of(dry_run: subprocess.CompletedProcess) -> set[str]:
    assert dry_run.returncode == 0, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]
    return set(re.findall(r"^(\w+)\s+\d+\s*$", dry_run.stdout, flags=re.M))


def test_rerun_without_change_does_nothing(smoke_run):
    assert jobs_of(snakemake(smoke_run, "-n")) == set()


def test_sampling_change_reruns_sampling_and_downstream_only(smoke_run, tmp_path):
    change = tmp_path / "change.yaml"
    change.write_text("sampling:\n  sampler:\n    steps: 4\n")
    jobs = jobs_of(snakemake(smoke_run, "-n", configfiles=(str(change),)))
    assert {"sample_shard", "align_shard", "assemble_dataset", "train_fr", "eval_lfw"} <= jobs
    assert not jobs & {"train_ldm", "train_autoencoder", "train_embedder", "render_world", "extract_embeddings"}
