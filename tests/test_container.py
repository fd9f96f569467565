"""The config key `container` runs every rule in one image (apptainer), and the Dockerfile builds
that image from the source alone.

Apptainer is not needed: a fake `apptainer` on PATH answers the version check, "pulls" by writing
the image file, and runs what Snakemake asks it to run inside the image directly on the host,
recording every call.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version
from smk import REPO, jobs_of, snakemake

IMAGE = "docker://registry.example.org/idiff-workflow:test"

FAKE_APPTAINER = """
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_APPTAINER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if args == ["--version"]:
    print("apptainer version 1.3.4")
elif args[0] == "pull":                      # pull --name <hash>.simg <url>, in the image folder
    Path(args[args.index("--name") + 1]).write_text(args[-1])
else:                                        # [--quiet --silent] exec [options] <image> <shell> -c <cmd>
    os.execvp(args[-3], args[-3:])
"""


@pytest.fixture
def apptainer(tmp_path, monkeypatch) -> Path:
    """A fake apptainer on PATH; returns the file its calls are recorded in (one JSON list a line)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text(f"#!{sys.executable}\n{FAKE_APPTAINER}")
    (bin_dir / "apptainer").chmod(0o755)
    log = tmp_path / "apptainer.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir), prepend=os.pathsep)
    monkeypatch.setenv("FAKE_APPTAINER_LOG", str(log))
    return log


def calls(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_container_config_gives_the_whole_dag_its_image(apptainer, tmp_path):
    run = snakemake(tmp_path / "work", "-n", "--software-deployment-method", "apptainer",
                    "--config", f"container={IMAGE}")
    assert jobs_of(run) >= {"train_ldm", "sample_shard", "align_shard", "train_fr", "eval_lfw"}
    assert f"Singularity image {IMAGE} will be pulled." in run.stdout + run.stderr
    assert not any(re.search(r"^\s*container:", p.read_text(), flags=re.M) for p in (REPO / "rules").glob("*.smk")), \
        "a rule with its own container would not get the configured image"


def test_without_container_config_no_rule_has_an_image(apptainer, tmp_path):
    run = snakemake(tmp_path / "work", "-n", "--software-deployment-method", "apptainer")
    assert jobs_of(run) and "will be pulled" not in run.stdout + run.stderr
    assert calls(apptainer) == []  # apptainer is never even asked for its version


def test_a_job_runs_inside_the_configured_image(apptainer, tmp_path):
    workdir = tmp_path / "work"
    run = snakemake(workdir, "results/contexts/uniform.npz", "--software-deployment-method", "apptainer",
                    "--config", f"container={IMAGE}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (workdir / "results" / "contexts" / "uniform.npz").stat().st_size > 0
    image = f"{hashlib.md5(IMAGE.encode()).hexdigest()}.simg"
    recorded = calls(apptainer)
    assert ["pull", "--name", image, IMAGE] in recorded
    runs = [c for c in recorded if "exec" in c]
    assert len(runs) == 1 and Path(runs[0][-4]).name == image
    assert "make_contexts.py" in runs[0][-1]


def _docker_ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker's build context leaves `path` out: a pattern matches the path or a folder above
    it, from the context's root (`**/` at any depth)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(parts[i], pattern[3:]) for i in range(len(parts))):
                return True
        elif any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            return True
    return False


def test_dockerfile_builds_from_the_source_on_a_torch_that_pyproject_accepts():
    """`pip install .` keeps the base image's CUDA torch only if pyproject's range accepts it; the build
    context must hold every file of the package and the workflow, and none of the results or data."""
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=pytorch/pytorch:(\S+)-cuda\S+-runtime$", dockerfile, flags=re.M).group(1)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    torch_requirement = next(Requirement(d) for d in dependencies if Requirement(d).name == "torch")
    assert Version(base) in torch_requirement.specifier, (base, str(torch_requirement))
    assert re.search(r"^COPY \. \.$(?s:.*)^RUN pip install \. ", dockerfile, flags=re.M)

    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    needed = [f for f in tracked if f.split("/")[0] in {"idiff_core", "workflow_scripts", "rules", "config", "envs",
                                                         "profiles", "docker", "Snakefile", "pyproject.toml"}]
    assert needed and not [f for f in needed if _docker_ignored(f, patterns)]
    assert os.access(REPO / "docker" / "entrypoint.sh", os.X_OK)
    for outside in ("results/eval/lfw.csv", "data/ffhq/00000.png", "tests/test_container.py", ".git/HEAD",
                    "weights/backbone.pth", "results/ldm/ca_cpd25/ema.ckpt"):
        assert _docker_ignored(outside, patterns), outside


def test_conda_env_takes_its_dependencies_from_pyproject():
    """envs/idiff.yaml installs the package itself (one dependency list, no drift from the pins in
    pyproject.toml) on a Python that pyproject allows."""
    env = yaml.safe_load((REPO / "envs" / "idiff.yaml").read_text())
    assert next(d["pip"] for d in env["dependencies"] if isinstance(d, dict)) == ["-e .."]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.split()[0] == "python")
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python.split()[1].split(",")[0] == requires


def test_image_entrypoint_runs_the_installed_workflow_or_any_command(tmp_path):
    """`docker run IMAGE snakemake ...` gets the installed Snakefile; other commands run as given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "snakemake").write_text('#!/bin/sh\necho "snakemake $*"\n')
    (bin_dir / "snakemake").chmod(0o755)
    entry = str(REPO / "docker" / "entrypoint.sh")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    out = subprocess.run(["sh", entry, "snakemake", "--cores", "all"], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "snakemake --snakefile /opt/idiff-workflow/Snakefile --cores all"
    out = subprocess.run(["sh", entry, "echo", "hello"], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "hello"
    assert "docker/entrypoint.sh" in (REPO / "Dockerfile").read_text()
