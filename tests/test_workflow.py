"""The whole DAG runs end to end on the smoke configuration, and reruns only what a change touches."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from smk import REPO, snakemake


def test_lfw_table_has_the_experiment_and_both_reference_rows(smoke_run):
    table = pd.read_csv(smoke_run / "results" / "eval" / "lfw.csv")
    assert list(table["experiment"]) == ["uniform_cpd25", "real_reference", "embedder"]
    assert list(table.columns[:4]) == ["experiment", "replicate", "generator", "condition"]
    assert (table["replicate"] == 0).all()
    assert table["accuracy_mean"].between(0, 1).all() and (table["pairs"] == 100).all()
    row = table.iloc[0]
    assert (row["generator"], row["condition"], row["contexts"]) == ("ca_cpd25", "CA", "synthetic_uniform")
    assert table["guidance"].isna().all()  # the sampler's guidance scale: off by default, none for references
    assert (row["identities"], row["images_per_identity"]) == (6, 4)


def test_every_stage_left_its_files(smoke_run):
    results = smoke_run / "results"
    dataset = results / "datasets" / "uniform_cpd25"
    identities = sorted(p for p in dataset.iterdir() if p.is_dir())
    assert [p.name for p in identities] == [f"{i:05d}" for i in range(8)]
    assert all(len(list(p.glob("*.png"))) == 4 for p in identities)
    samples = list((results / "samples" / "uniform_cpd25").glob("shard*/*/*.png"))
    assert len(samples) == 10 * 4
    for name in ("separability", "leakage", "appearance"):
        table = pd.read_csv(results / "eval" / f"{name}.csv")
        assert list(table["dataset"]) == ["uniform_cpd25"]
    appearance = pd.read_csv(results / "eval" / "appearance.csv").iloc[0]
    summary = json.loads((results / "datasets" / "uniform_cpd25_summary.json").read_text())
    assert appearance["detection_rate"] == summary["detection_rate"] and appearance["samples_images"] == len(samples)
    assert 0 < appearance["samples_lightness_mean"] < 100 and 0 < appearance["training_lightness_mean"] < 100
    separability = pd.read_csv(results / "eval" / "separability.csv").iloc[0]
    assert (separability["sampler"], separability["sampling_steps"]) == ("dpmsolver++", 5)
    assert pd.isna(separability["guidance_scale"])  # off by default
    logs = list((results / "logs").rglob("*.log"))
    assert logs and all("[idiff] stage" in log.read_text() for log in logs)


def test_two_stage_contexts_ignore_a_guidance_scale(smoke_run, tmp_path):
    """Guidance contrasts a context with the empty one, so the unconditional generator of two-stage
    contexts samples without it even when sampling.sampler sets a scale (it used to stop the job)."""
    workdir = tmp_path / "run"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    override = tmp_path / "two_stage.yaml"
    override.write_text(yaml.safe_dump({
        "generators": {"uncond": {"pretrained": None, "training": {},
                                  "unet": {"is_context_conditional": False, "context_dropout_probability": 0.0}}},
        "contexts": {"two_stage": {"kind": "two_stage", "count": 3, "dim": 64, "seed": 0, "generator": "uncond",
                                   "source": None}},
        "sampling": {"sampler": {"guidance_scale": 2.0}}}))
    run = snakemake(workdir, "results/contexts/two_stage.npz", configfiles=(str(override),))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = set(re.findall(r"^(\w+)\s+\d+\s*$", run.stdout + run.stderr, flags=re.M))
    assert ran == {"train_ldm", "make_contexts", "total"}
    with np.load(workdir / "results" / "contexts" / "two_stage.npz") as contexts:
        assert contexts["matrix"].shape == (3, 64)


def test_a_released_context_file_becomes_a_context_set(tmp_path):
    """Context kind `file`: IDiff-Face's released form (a torch.save'd name -> vector dict) is imported
    in the file's order, with no job upstream of it."""
    from idiff_core.standins import write_vector_dict

    rng = np.random.default_rng(0)
    released = {f"{i:05d}_synthetic": rng.normal(size=64) for i in range(5)}
    write_vector_dict(tmp_path / "random_synthetic_uniform_5000.npy", released)
    override = tmp_path / "released.yaml"
    override.write_text(yaml.safe_dump({"contexts": {"released": {
        "kind": "file", "count": 4, "dim": 64, "seed": 0, "generator": None, "source": None,
        "file": str(tmp_path / "random_synthetic_uniform_5000.npy")}}}))
    run = snakemake(tmp_path / "run", "results/contexts/released.npz", configfiles=(str(override),))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert set(re.findall(r"^(\w+)\s+\d+\s*$", run.stdout + run.stderr, flags=re.M)) == {"make_contexts", "total"}
    with np.load(tmp_path / "run" / "results" / "contexts" / "released.npz") as contexts:
        assert contexts["matrix"].shape == (4, 64)
        assert json.loads(str(contexts["meta"]))["source_names"] == list(released)[:4]


def test_a_released_model_folder_is_imported_as_a_generator(tmp_path):
    """`generators.<name>.pretrained` names a released model folder: rule import_generator checks its
    .hydra/config.yaml against the configured generator and keeps the chosen weights, in the DDPM layout."""
    import torch

    from idiff_core.checkpoint import save_state
    from idiff_core.config import generator_unet, image_size, load_config
    from idiff_core.diffusion.schedule import DiffusionSchedule, ddpm_checkpoint_state, load_ddpm_checkpoint
    from idiff_core.models.unet import UNet, UNetConfig

    config = load_config(REPO / "config" / "config.yaml", [REPO / "config" / "smoke.yaml"])
    unet = generator_unet(config, "ca_cpd25")
    release = tmp_path / "released" / "unet_cond_ca_cpd25"
    (release / ".hydra").mkdir(parents=True)
    (release / ".hydra" / "config.yaml").write_text(yaml.safe_dump({
        "constants": {"image_size": image_size(config), "input_channels": 3, "n_classes": 0},
        "model": {**{k: v for k, v in unet.items() if k != "norm_groups"},
                  "n_context_classes": "${constants.n_classes}"},
        "diffusion": {"eps_model": "${model}", "T": config["ldm"]["diffusion"]["timesteps"],
                      "schedule_type": config["ldm"]["diffusion"]["schedule"]}}))
    schedule = DiffusionSchedule.create(config["ldm"]["diffusion"]["timesteps"], config["ldm"]["diffusion"]["schedule"])
    torch.manual_seed(0)
    for name in ("ema_averaged_model.ckpt", "model.ckpt"):
        save_state(release / "checkpoints" / name, {f"module.{k}": v for k, v in ddpm_checkpoint_state(
            UNet(UNetConfig(**{**unet, "norm_groups": 32})), schedule).items()})
    override = tmp_path / "released.yaml"
    override.write_text(yaml.safe_dump({
        "ldm": {"unet": {"norm_groups": 32}},  # the released UNet's GroupNorm
        "generators": {"released": {"pretrained": str(release), "pretrained_weights": "model", "unet": {},
                                    "training": {}}}}))
    run = snakemake(tmp_path / "run", "results/ldm/released/ema.ckpt", configfiles=(str(override),))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert set(re.findall(r"^(\w+)\s+\d+\s*$", run.stdout + run.stderr, flags=re.M)) == {"import_generator", "total"}
    imported = UNet(UNetConfig(**{**unet, "norm_groups": 32}))
    load_ddpm_checkpoint(tmp_path / "run" / "results" / "ldm" / "released" / "ema.ckpt", imported)
    raw = torch.load(release / "checkpoints" / "model.ckpt", weights_only=True)
    assert all(torch.equal(v, raw[f"module.eps_model.{k}"]) for k, v in imported.state_dict().items())


def test_released_training_embeddings_replace_their_extraction(tmp_path):
    """`embedder.training_embeddings`: rule import_embeddings writes results/embeddings/ffhq.npz from a
    released file (names = the training faces' stems), and the LDM trains on it; LFW is still extracted."""
    from idiff_core.standins import write_vector_dict

    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    faces, dim = config["data"]["world"]["ffhq_identities"], 64
    rng = np.random.default_rng(0)
    write_vector_dict(tmp_path / "embeddings_elasticface_128.npy",
                      {f"{i:05d}": rng.normal(size=dim) for i in range(faces)})
    override = tmp_path / "released.yaml"
    released = str(tmp_path / "embeddings_elasticface_128.npy")
    override.write_text(yaml.safe_dump({"embedder": {"training_embeddings": released}}))
    plan = snakemake(tmp_path / "run", "-n", "results/ldm/ca_cpd25/ema.ckpt", "results/embeddings/lfw.npz",
                     configfiles=(str(override),))
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    counts = job_counts(plan)
    assert counts["import_embeddings"] == 1 and counts["extract_embeddings"] == 1 and counts["train_ldm"] == 1
    run = snakemake(tmp_path / "run", "results/embeddings/ffhq.npz", configfiles=(str(override),))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with np.load(tmp_path / "run" / "results" / "embeddings" / "ffhq.npz") as embeddings:
        assert embeddings["matrix"].shape == (faces, dim)


def test_a_released_block_dataset_and_evaluated_weights_join_the_lfw_table(smoke_run, tmp_path):
    """A dataset in IDiff-Face's released form (identity blocks, filler tiles and all) is imported,
    assembled, trained on and evaluated like a sampled one; an evaluation-only experiment evaluates a
    given backbone file and names it by SHA-256."""
    import torch

    from idiff_core.io import file_digests, read_rgb
    from idiff_core.standins import iresnet_layout, random_weights, write_identity_blocks

    workdir = tmp_path / "run"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    dataset = smoke_run / "results" / "datasets" / "uniform_cpd25"
    faces = {p.name: [read_rgb(p / f"{k}.png") for k in range(4)] for p in sorted(dataset.iterdir()) if p.is_dir()}
    write_identity_blocks(tmp_path / "release", faces, columns=3)  # 2 x 3 tiles: 4 faces, 2 black fillers
    torch.save(random_weights(iresnet_layout((1, 1, 1, 1), 64), seed=0), tmp_path / "backbone.pth")
    smoke = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    released = {"folder": str(tmp_path / "release"), "layout": "blocks", "tile_size": 112, "grid": [2, 3],
                "align": False}
    override = tmp_path / "released.yaml"
    override.write_text(yaml.safe_dump({
        "datasets": {"published": {"released": released, "identities": 8, "images_per_identity": 4}},
        "experiments": smoke["experiments"] + [
            {**smoke["experiments"][0], "name": "on_published", "dataset": "published"},
            {"name": "given_backbone", "weights": str(tmp_path / "backbone.pth"),
             "model": {"arch": [1, 1, 1, 1], "num_features": 64, "base_width": 64, "input_size": 112}}]}))
    aligned = tmp_path / "aligned.yaml"
    aligned.write_text(yaml.safe_dump({"datasets": {"published": {"released": {**released, "align": True}}}}))
    plan = job_counts(snakemake(workdir, "-n", "results/eval/lfw.csv", configfiles=(str(override), str(aligned))))
    assert plan == {"import_released_dataset": 1, "align_shard": 1, "assemble_dataset": 1, "train_fr": 1,
                    "eval_lfw": 2, "lfw_table": 1}
    run = snakemake(workdir, "results/eval/lfw.csv", "results/eval/separability.csv", "results/eval/leakage.csv",
                    configfiles=(str(override),))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ran = set(re.findall(r"^(\w+)\s+\d+\s*$", run.stdout + run.stderr, flags=re.M)) - {"total"}
    assert ran == {"import_released_dataset", "assemble_dataset", "train_fr", "eval_lfw", "lfw_table",
                   "embed_samples", "synthetic_quality", "quality_table"}
    separability = pd.read_csv(workdir / "results" / "eval" / "separability.csv").set_index("dataset")
    assert list(separability.index) == ["uniform_cpd25", "published"]
    assert separability.loc["published", ["n_identities", "n_genuine"]].tolist() == [8, 8 * 6]  # 4 images: 6 pairs
    assert pd.isna(separability.loc["published", "consistency_mean"])  # no contexts come with a release
    assert pd.isna(separability.loc["published", "sampler"])
    leakage = pd.read_csv(workdir / "results" / "eval" / "leakage.csv")
    assert list(leakage["dataset"]) == ["uniform_cpd25", "published"]
    published = workdir / "results" / "datasets" / "published"
    for name, images in faces.items():  # used as released: the same pixels, the filler left out
        assert all(np.array_equal(read_rgb(published / name / f"{k}.png"), images[k]) for k in range(4))
    table = pd.read_csv(workdir / "results" / "eval" / "lfw.csv").set_index("experiment")
    assert list(table.index) == ["uniform_cpd25", "on_published", "given_backbone", "real_reference", "embedder"]
    row = table.loc["on_published"]
    assert (row["generator"], row["contexts"], row["dataset"], row["identities"]) == ("released", "released",
                                                                                      "published", 6)
    assert row["backbone_sha256"] == file_digests(workdir / "results" / "fr" / "on_published" / "backbone.pt").sha256
    given = table.loc["given_backbone"]
    assert given["backbone_sha256"] == file_digests(tmp_path / "backbone.pth").sha256
    assert (given["contexts"], given["backbone"], given["weights"]) == (
        "evaluation only", "[1, 1, 1, 1]", str(tmp_path / "backbone.pth"))
    assert pd.isna(given["identities"]) and 0 <= given["accuracy_mean"] <= 1 and given["pairs"] == 100
    assert not (workdir / "results" / "fr" / "given_backbone").exists()


def test_generators_share_one_latents_file(tmp_path):
    """The training faces are encoded once: two generators' training jobs read one encode_latents output."""
    override = tmp_path / "second_generator.yaml"
    override.write_text(yaml.safe_dump({"generators": {"ca_cpd50": {
        "pretrained": None, "training": {}, "unet": {"condition_type": "CA", "context_dropout_probability": 0.5}}}}))
    plan = snakemake(tmp_path / "run", "-n", "results/ldm/ca_cpd25/ema.ckpt", "results/ldm/ca_cpd50/ema.ckpt",
                     configfiles=(str(override),))
    counts = job_counts(plan)
    assert (counts["encode_latents"], counts["train_ldm"]) == (1, 2)
    fields = re.findall(r"^ {4}(input|output): (.*)$", plan.stdout, flags=re.M)
    uses = sorted(kind for kind, files in fields if "results/latents/ffhq.pt" in files.split(", "))
    assert uses == ["input", "input", "output"]  # written once, read by both generators


# ---- partial reruns: which jobs a config change touches (dry runs on the finished smoke run)

# Rerun decisions from the config alone: params, the set of input files, and file dates. Snakemake's
# `code` trigger (script dates, rule code) is left out so that source edits made while the session
# runs do not count as config changes; `software-env` needs conda, which the tests do not use.
CONFIG_TRIGGERS = ("--rerun-triggers", "mtime", "params", "input")


def job_counts(dry_run: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> number of jobs a dry run (`-n`) would execute."""
    assert dry_run.returncode == 0, dry_run.stdout[-3000:] + dry_run.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", dry_run.stdout, flags=re.M))
    return {rule: int(n) for rule, n in counts.items() if rule != "total"}


def rerun_after(workdir: Path, tmp_path: Path, change: str) -> dict[str, int]:
    """The pipeline's jobs a dry run plans on the smoke run with the YAML `change` merged over the
    smoke config (the report's figures and `all`, rebuilt after any change, are left out)."""
    override = tmp_path / "change.yaml"
    override.write_text(change)
    counts = job_counts(snakemake(workdir, "-n", *CONFIG_TRIGGERS, configfiles=(str(override),)))
    return {rule: n for rule, n in counts.items() if rule != "all" and not rule.startswith("report_")}


# Everything the synthetic samples feed (smoke config: one dataset in two shards, one experiment).
DOWNSTREAM_OF_SAMPLING = {"sample_shard": 2, "align_shard": 2, "assemble_dataset": 1, "train_fr": 1, "eval_lfw": 1,
                          "lfw_table": 1, "lfw_summary": 1, "embed_samples": 1, "synthetic_quality": 1,
                          "sample_appearance": 1, "quality_table": 3}


def test_rerun_without_change_does_nothing(smoke_run):
    assert job_counts(snakemake(smoke_run, "-n", *CONFIG_TRIGGERS)) == {}


def test_sampling_change_reruns_sampling_and_downstream_only(smoke_run, tmp_path):
    """Sampling and all it feeds, plus the LFW-context experiment (it samples with the same sampler);
    no training upstream of the samples, no real_reference or embedder row."""
    assert rerun_after(smoke_run, tmp_path, "sampling:\n  sampler:\n    steps: 4\n") == {
        **DOWNSTREAM_OF_SAMPLING, "lfw_contexts": 1}


def test_a_datasets_own_sampler_reruns_that_dataset_only(smoke_run, tmp_path):
    """`datasets.<name>.sampler` overrides sampling.sampler for that dataset alone: its samples and all
    they feed rerun, the LFW-context experiment (global sampler) does not."""
    assert rerun_after(smoke_run, tmp_path, "datasets:\n  uniform_cpd25:\n    sampler: {guidance_scale: 2.0}\n") == \
        DOWNSTREAM_OF_SAMPLING


def test_fr_change_reruns_fr_training_and_evaluation_only(smoke_run, tmp_path):
    """Both FR models read fr.train (the experiment and, on the face world, real_reference); the
    embedder's row and everything upstream stay."""
    assert rerun_after(smoke_run, tmp_path, "fr:\n  train:\n    weight_decay: 0.001\n") == {
        "train_fr": 2, "eval_lfw": 2, "lfw_table": 1, "lfw_summary": 1}


def test_real_reference_width_change_realigns_the_labelled_set(smoke_run, tmp_path):
    """The labelled set is aligned only where the real reference trains: its width picks that part."""
    assert rerun_after(smoke_run, tmp_path, "fr:\n  train:\n    width: 4\n") == {
        "align_real": 1, "train_fr": 1, "eval_lfw": 1, "lfw_table": 1, "lfw_summary": 1}


def test_ldm_learning_rate_change_reruns_from_ldm_training_on(smoke_run, tmp_path):
    """The generator and all that its samples feed; not the autoencoder, embedder, world,
    contexts, or the real_reference and embedder rows."""
    assert rerun_after(smoke_run, tmp_path, "ldm:\n  training:\n    learning_rate: 0.0002\n") == {
        "train_ldm": 1, **DOWNSTREAM_OF_SAMPLING, "lfw_contexts": 1}


def test_benchmark_size_change_rerenders_the_benchmark_only(smoke_run, tmp_path):
    """More LFW-like pairs: the benchmark and its evaluations; the training faces, the labelled set and
    all that is trained on them stay."""
    assert rerun_after(smoke_run, tmp_path, "data:\n  world:\n    lfw_pairs_per_fold: 4\n") == {
        "render_world_lfw": 1, "align_real": 1, "extract_embeddings": 1, "eval_lfw": 3, "lfw_table": 1, "lfw_summary": 1,
        "lfw_contexts": 1}


def reordered(value):
    """The same config with every mapping's keys in reverse order (lists keep theirs: it is meaning)."""
    if isinstance(value, dict):
        return {key: reordered(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(item) for item in value]
    return value


def merged(base: dict, override: dict) -> dict:
    """Snakemake's --configfile semantics: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def test_reordering_config_keys_reruns_nothing(smoke_run, tmp_path):
    """The whole smoke config in reverse key order at every level, as the only --configfile (its
    order is the order Snakemake's config has), changes no job's params."""
    config = merged(yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
                    yaml.safe_load((REPO / "config" / "smoke.yaml").read_text()))
    shuffled = tmp_path / "reordered.yaml"
    shuffled.write_text(yaml.safe_dump(reordered(config), sort_keys=False))
    assert list(yaml.safe_load(shuffled.read_text())) == list(reversed(list(config)))
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(REPO / "Snakefile"),
                          "--directory", str(smoke_run), "-n", *CONFIG_TRIGGERS, "--configfile", str(shuffled)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert job_counts(run) == {}


def test_replicates_rerun_the_seeded_chain_and_summarise(smoke_run, tmp_path):
    """Replicate 1 of the experiment retrains its generator, redraws its contexts, resamples and
    retrains FR with every seed + 1, sharing the world, the embedder and the autoencoder; lfw.csv gets
    its row and lfw_summary.csv the mean, sd and range over both."""
    workdir = tmp_path / "run"
    shutil.copytree(smoke_run, workdir, symlinks=True)
    override = tmp_path / "replicates.yaml"
    override.write_text("replicates: 2\n")
    target = "results/eval/lfw_summary.csv"
    assert job_counts(snakemake(workdir, "-n", target, configfiles=(str(override),))) == {
        "train_ldm": 1, "make_contexts": 1, "sample_shard": 2, "align_shard": 2, "assemble_dataset": 1,
        "train_fr": 1, "eval_lfw": 1, "lfw_table": 1, "lfw_summary": 1}
    run = snakemake(workdir, target, configfiles=(str(override),))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = workdir / "results"
    table = pd.read_csv(results / "eval" / "lfw.csv")
    assert list(zip(table["experiment"], table["replicate"])) == [
        ("uniform_cpd25", 0), ("uniform_cpd25", 1), ("real_reference", 0), ("embedder", 0)]
    assert (table["generator"].iloc[:2] == "ca_cpd25").all()
    for replicate in ("ldm/ca_cpd25_rep1/loss.csv", "contexts/uniform_rep1.npz", "fr/uniform_cpd25_rep1/backbone.pt"):
        assert (results / replicate).is_file()
    with np.load(results / "contexts" / "uniform.npz") as first, np.load(results / "contexts" / "uniform_rep1.npz") as second:
        assert not np.allclose(first["matrix"], second["matrix"])  # contexts seeded + 1
    summary = pd.read_csv(results / "eval" / "lfw_summary.csv").set_index("experiment")
    assert list(summary.index) == ["uniform_cpd25", "real_reference", "embedder"]
    row, accuracies = summary.loc["uniform_cpd25"], table["accuracy_mean"].iloc[:2]
    assert row["replicates"] == 2 and row["accuracy_mean"] == pytest.approx(accuracies.mean())
    assert row["accuracy_mean_sd"] == pytest.approx(accuracies.std(ddof=1), abs=1e-12)
    assert (row["accuracy_mean_min"], row["accuracy_mean_max"]) == (accuracies.min(), accuracies.max())
    assert summary.loc["embedder", "replicates"] == 1 and np.isnan(summary.loc["embedder", "accuracy_mean_sd"])
