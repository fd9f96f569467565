"""The slurm profile submits every job of the smoke DAG with the right sbatch flags.

No cluster is needed: fake `sbatch`, `sacct`, ... on PATH record the submissions. The fake sbatch
also creates the job's outputs (paths taken from a dry run), so each finished wave releases the
next and the whole DAG is submitted in one run; the fake sacct reports every job COMPLETED.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

plugin = pytest.importorskip("snakemake_executor_plugin_slurm.validation",
                             reason="needs snakemake-executor-plugin-slurm (pip install '.[slurm]')")

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
SETTINGS = yaml.safe_load((PROFILE / "config.yaml").read_text())
# The smoke DAG's GPU stages (their rules declare `resources: gpu=1`).
GPU_STAGES = {"train_autoencoder", "train_embedder", "extract_embeddings", "encode_latents", "train_ldm",
              "sample_shard", "train_fr", "eval_lfw", "embed_samples"}

# sbatch: record the call, create the outputs of the wrapped job, answer a job id (--parsable).
FAKE_SBATCH = """
import fcntl, json, os, re, sys
from pathlib import Path

state = Path(os.environ["FAKE_SLURM_STATE"])
wrap = next(a for a in sys.argv[1:] if a.startswith("--wrap="))
target = re.search(r"--target-jobs '([^']*)'", wrap).group(1)
for path in json.loads((state / "plan.json").read_text())[target]["files"]:
    if Path(path).suffix:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).touch()
    else:  # directory() outputs are the suffix-less ones in this workflow
        Path(path).mkdir(parents=True, exist_ok=True)
with open(state / "lock", "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    calls = state / "sbatch.jsonl"
    job_id = 1000 + (len(calls.read_text().splitlines()) if calls.exists() else 0)
    with open(calls, "a") as out:
        out.write(json.dumps({"id": job_id, "target": target, "argv": sys.argv[1:]}) + "\\n")
print(job_id)
"""

# sacct: the status query (`--name <run uuid>`) lists every submitted job as COMPLETED.
FAKE_SACCT = """
import json, os, sys
from pathlib import Path

calls = Path(os.environ["FAKE_SLURM_STATE"]) / "sbatch.jsonl"
if "--name" in sys.argv and calls.exists():
    for line in calls.read_text().splitlines():
        print(f"{json.loads(line)['id']}|COMPLETED")
"""

# The rest of what the plugin may call answers nothing: no account list to check against, no
# partition list, no scontrol config (defaults), nothing to cancel.
SILENT = ("sinfo", "squeue", "scancel", "scontrol", "sacctmgr", "sshare")


def run_snakemake(workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """Snakemake with the slurm profile on the smoke config, started in `workdir` (the plugin puts
    its logs and `sbatch -D` there). No conda here: the deployment method is swapped for one that
    needs nothing (no rule declares env modules)."""
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"),
                           "--workflow-profile", str(PROFILE), "--software-deployment-method", "env-modules",
                           *args, "--configfile", str(REPO / "config" / "smoke.yaml")],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def jobs_in_log(log: str) -> dict[str, dict]:
    """`rule:wildcards` (as in the jobstep's --target-jobs) -> the files the job must leave
    (outputs and benchmark), its GPUs and threads (only real runs print threads), from Snakemake's log."""
    jobs = {}
    for block in re.split(r"\n(?=rule \w+:)", log):
        rule = re.match(r"rule (\w+):", block)
        fields = dict(re.findall(r"^ {4}(\w+): (.*)$", block, flags=re.M))
        if not rule or "output" not in fields:
            continue
        files = fields["output"].split(", ") + ([fields["benchmark"]] if "benchmark" in fields else [])
        spec = fields.get("wildcards", "").replace(", ", ",")
        resources = dict(r.split("=", 1) for r in fields.get("resources", "").split(", ") if "=" in r)
        jobs[f"{rule.group(1)}:{spec}"] = {"files": files, "threads": int(fields.get("threads", 1)),
                                           "gpus": int(resources.get("gpu", 0))}
    return jobs


def sbatch_flags(argv: list[str]) -> dict[str, str]:
    """`--flag value`, `--flag=value` and `-f value` of one sbatch call, as one mapping."""
    flags, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if "=" in arg and arg.startswith("--"):
            key, value = arg.split("=", 1)
            flags[key] = value
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            flags[arg] = argv[i + 1]
            i += 1
        else:
            flags[arg] = ""
        i += 1
    return flags


@pytest.fixture(scope="module")
def submissions(tmp_path_factory) -> dict:
    """One submission of the whole smoke DAG through the fake SLURM: the dry run's plan, every
    sbatch call, and the run's result."""
    root = tmp_path_factory.mktemp("slurm")
    workdir, state, bin_dir = root / "work", root / "state", root / "bin"
    for folder in (workdir, state, bin_dir):
        folder.mkdir()
    for name, body in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
    for name in SILENT:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_STATE": str(state)}
    dry_run = run_snakemake(workdir, env, "-n")
    assert dry_run.returncode == 0, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]
    plan = jobs_in_log(dry_run.stdout)
    (state / "plan.json").write_text(json.dumps(plan))
    # Status checks every second instead of the cluster-friendly 40 s; a broken job fails at once
    # instead of after the profile's latency wait and retries.
    run = run_snakemake(workdir, env, "--slurm-init-seconds-before-status-checks", "1",
                        "--seconds-between-status-checks", "1", "--latency-wait", "1", "--retries", "0")
    calls = [json.loads(line) for line in (state / "sbatch.jsonl").read_text().splitlines()]
    return {"plan": plan, "run": run, "calls": calls, "threads": jobs_in_log(run.stdout + run.stderr)}


def rule_of(call: dict) -> str:
    return call["target"].split(":")[0]


def test_every_job_of_the_dag_is_submitted_once(submissions):
    run = submissions["run"]
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    submitted = [call["target"] for call in submissions["calls"]]
    # `all` has no action: Snakemake finishes it itself.
    assert sorted(submitted) == sorted(t for t in submissions["plan"] if not t.startswith("all:"))


def test_gpu_rules_request_gpus_and_cpu_rules_do_not(submissions):
    gpu_rules = set()
    for call in submissions["calls"]:
        flags, rule = sbatch_flags(call["argv"]), rule_of(call)
        gpus = submissions["plan"][call["target"]]["gpus"]
        if gpus:
            gpu_rules.add(rule)
            assert rule in SETTINGS["set-resources"], f"GPU rule {rule} has no GPU partition in the profile"
            wanted = SETTINGS["set-resources"][rule]
            model = f"{wanted['gpu_model']}:" if "gpu_model" in wanted else ""
            assert flags.get("--gpus") == f"{model}{gpus}", call["target"]
            assert flags["-p"] == wanted["slurm_partition"] != SETTINGS["default-resources"]["slurm_partition"]
        else:  # includes make_contexts for the smoke config's synthetic_uniform set (gpu=0)
            assert "--gpus" not in flags and "--gres" not in flags, call["target"]
            assert flags["--ntasks"] == "1"
        assert flags["-A"] == SETTINGS["default-resources"]["slurm_account"]
        # Every stage's threads reach SLURM uncapped (no --cores on the submitting node).
        assert int(flags["--cpus-per-task"]) == submissions["threads"][call["target"]]["threads"]
    assert GPU_STAGES <= gpu_rules
    assert "make_contexts" not in gpu_rules and "render_world" not in gpu_rules


def test_runtime_and_memory_are_set_per_rule(submissions):
    defaults = SETTINGS["default-resources"]
    for call in submissions["calls"]:
        flags = sbatch_flags(call["argv"])
        wanted = {**defaults, **SETTINGS["set-resources"].get(rule_of(call), {})}
        assert int(flags["-t"]) == wanted["runtime"] > 0, call["target"]
        assert int(flags["--mem"]) == wanted["mem_mb"] > 0, call["target"]


def test_nothing_rejected_goes_through_slurm_extra(submissions):
    """The plugin rejects executor-managed flags in slurm_extra; the profile sets none of them."""
    forbidden = plugin.get_forbidden_slurm_options()
    extras = [SETTINGS["default-resources"].get("slurm_extra", "")]
    extras += [res.get("slurm_extra", "") for res in SETTINGS["set-resources"].values()]
    for extra in filter(None, extras):
        assert not [name for pattern, name in forbidden.items() if re.search(pattern, extra)], extra
    assert "not allowed in the 'slurm_extra'" not in submissions["run"].stderr


def test_profile_runs_remote_jobs_with_conda_and_never_all_cores():
    assert SETTINGS["executor"] == "slurm" and SETTINGS["software-deployment-method"] == "conda"
    assert SETTINGS["jobs"] >= 1 and SETTINGS["latency-wait"] >= 30 and SETTINGS["retries"] >= 1
    assert "cores" not in SETTINGS and "resources" not in SETTINGS
    assert not set(SETTINGS["set-resources"]) - rules_of_workflow(), "profile names a rule the workflow lacks"


def rules_of_workflow() -> set[str]:
    """Every rule name of the workflow (both data sources' variants)."""
    text = "".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    return set(re.findall(r"^\s*rule (\w+):", text, flags=re.M))
