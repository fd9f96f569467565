"""The paper path executed: stand-ins in the published formats, the pre-flight check, and the whole
paper DAG at paper shapes on tiny data (config/paper.yaml + config/rehearsal.yaml)."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from refdata import reference_dir, require
from smk import REPO

from idiff_core import preflight, standins
from idiff_core.data.benchmarks import read_bin, read_lfw_pairs
from idiff_core.io import file_digests, list_images, read_rgb

PAPER_CONFIGS = ("--configfile", str(REPO / "config" / "paper.yaml"), str(REPO / "config" / "rehearsal.yaml"))
NETWORK_KEYS = [("embedder", "model"), ("autoencoder", "model"), ("ldm", "unet"), ("ldm", "diffusion"),
                ("fr", "model"), ("generators",)]


def _yaml(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def _standin_tree(source: Path, dest: Path) -> Path:
    """A private copy of the stand-ins (hard links: tests replace files, never edit them in place)."""
    shutil.copytree(source, dest, copy_function=os.link)
    return dest


def _snakemake(workdir: Path, *args: str, configfiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(REPO / "Snakefile"),
                           "--directory", str(workdir), *args, *PAPER_CONFIGS, *configfiles],
                          cwd=REPO, capture_output=True, text=True, timeout=1500)


def test_rehearsal_keeps_every_network_and_experiment_of_the_paper():
    paper, rehearsal = _yaml("paper.yaml"), _yaml("rehearsal.yaml")
    for keys in NETWORK_KEYS:
        section = rehearsal
        for key in keys:
            section = section.get(key, {})
        assert section == {}, f"config/rehearsal.yaml changes {'.'.join(keys)}: the rehearsal keeps paper shapes"
    assert [e["name"] for e in rehearsal["experiments"]] == [e["name"] for e in paper["experiments"]]
    for ours, theirs in zip(rehearsal["experiments"], paper["experiments"]):
        assert {k: v for k, v in ours.items() if k not in ("width", "depth")} == \
            {k: v for k, v in theirs.items() if k not in ("width", "depth")}


def test_standin_paths_are_the_ones_the_rehearsal_names():
    rehearsal = _yaml("rehearsal.yaml")
    assert rehearsal["data"]["ffhq"]["location"] == standins.FFHQ_DIR
    assert (rehearsal["data"]["lfw"]["images"], rehearsal["data"]["lfw"]["pairs"]) == (standins.LFW_DIR, standins.LFW_PAIRS)
    assert rehearsal["embedder"]["weights"] == standins.ELASTICFACE
    assert rehearsal["autoencoder"]["ldm"]["location"] == standins.LDM_ZIP
    assert rehearsal["data"]["benchmarks"] == {b: f"{standins.BENCHMARK_DIR}/{b}.bin" for b in standins.BENCHMARKS}


def test_standin_layouts_follow_the_published_manifests():
    folder = require(reference_dir())
    assert standins.iresnet_layout() == standins.manifest_layout(folder / "iresnet" / "manifest_iresnet100.tsv")
    assert standins.iresnet_layout((3, 4, 14, 3)) == standins.manifest_layout(
        folder / "iresnet" / "manifest_iresnet50.tsv")  # IDiff-Face's released FR model
    assert standins.ldm_first_stage_layout() == standins.manifest_layout(
        folder / "vq" / "manifest_ldm_ffhq256_first_stage_model.tsv", "first_stage_model.")


def test_standin_files_are_in_the_published_formats(paper_standins):
    weights = torch.load(paper_standins / standins.ELASTICFACE, weights_only=True, mmap=True)
    assert [(k, tuple(v.shape)) for k, v in weights.items()] == standins.iresnet_layout()
    with zipfile.ZipFile(paper_standins / standins.LDM_ZIP) as archive:
        assert "model.ckpt" in archive.namelist()
        checkpoint = torch.load(io.BytesIO(archive.read("model.ckpt")), weights_only=True)
    keys = list(checkpoint["state_dict"])
    first_stage = [(k.removeprefix("first_stage_model."), tuple(checkpoint["state_dict"][k].shape))
                   for k in keys if k.startswith("first_stage_model.")]
    assert first_stage == standins.ldm_first_stage_layout() and len(keys) > len(first_stage)
    faces = list_images(paper_standins / standins.FFHQ_DIR)
    assert faces[0].relative_to(paper_standins / standins.FFHQ_DIR).as_posix() == "00000/00000.png"
    assert len(faces) == _yaml("rehearsal.yaml")["data"]["ffhq"]["expected_count"]
    pairs, folds = read_lfw_pairs(paper_standins / standins.LFW_PAIRS)
    assert folds == 10 and len(pairs) == _yaml("rehearsal.yaml")["data"]["lfw"]["expected_pairs"]
    for name in standins.BENCHMARKS:
        path = paper_standins / standins.BENCHMARK_DIR / f"{name}.bin"
        images, issame = read_bin(path)
        assert images.shape[1:] == (112, 112, 3) and len(images) == 2 * len(issame) and issame.any() and not issame.all()
        assert pickle.loads(path.read_bytes(), encoding="bytes")[1] == issame.tolist()
    released = _yaml("released.yaml")
    block = released["datasets"]["released_uniform_cpd25"]["released"]
    assert (block["folder"], block["tile_size"], block["grid"]) == (standins.RELEASED_DATASET, standins.RELEASED_TILE,
                                                                   list(standins.RELEASED_BLOCK))
    blocks = list_images(paper_standins / standins.RELEASED_DATASET)
    rows, columns = standins.RELEASED_BLOCK
    assert len(blocks) == 5 and read_rgb(blocks[0]).shape == (rows * 112, columns * 112, 3)
    assert released["experiments"][-2]["weights"] == standins.RELEASED_FR
    weights = torch.load(paper_standins / standins.RELEASED_FR, weights_only=True, mmap=True)
    assert [(k, tuple(v.shape)) for k, v in weights.items()] == standins.iresnet_layout((3, 4, 14, 3))


def test_preflight_names_every_broken_input_in_one_message(paper_standins, tmp_path):
    tree = _standin_tree(paper_standins, tmp_path / "broken")
    (tree / standins.ELASTICFACE).unlink()                                      # missing weights
    (tree / standins.LFW_DIR / "Person_0003" / "Person_0003_0001.jpg").unlink()  # a pairs image absent
    zip_path = tree / standins.LDM_ZIP
    zip_path.unlink()                                                           # a zip without model.ckpt
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("config.yaml", "model: {}\n")
    (tree / standins.FFHQ_DIR / "00000" / "00015.png").unlink()                 # FFHQ one face short
    (tree / standins.BENCHMARK_DIR / "cplfw.bin").unlink()
    result = _snakemake(tree, "-n", "results/eval/lfw.csv")
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "5 problem(s)" in message, message[-3000:]
    for expected in ("embedder.weights", "Elastic_R100_295672backbone.pth does not exist", "github.com/fdbtrs/ElasticFace",
                     "Person_0003/Person_0003_0001", "autoencoder.ldm.location", "'model.ckpt'",
                     "data.ffhq.location", "00015.png", "data.benchmarks.cplfw"):
        assert expected in message, (expected, message[-3000:])
    assert not (tree / "results").exists()  # nothing ran


def test_preflight_names_missing_released_files(tmp_path):
    config = {**_yaml("config.yaml"), "generators": {"released": {"pretrained": str(tmp_path / "unet_cond_ca_cpd25")}},
              "contexts": {"uniform": {"kind": "synthetic_uniform"},
                           "released": {"kind": "file", "file": str(tmp_path / "random_synthetic_uniform_5000.npy")}}}
    config["embedder"] = {**config["embedder"], "training_embeddings": str(tmp_path / "embeddings_elasticface_128.npy")}
    problems = preflight.released_file_problems(config)
    assert [p.split(":")[0] for p in problems] == ["generators.released.pretrained", "contexts.released.file",
                                                  "embedder.training_embeddings"]
    (tmp_path / "unet_cond_ca_cpd25").mkdir()
    (tmp_path / "embeddings_elasticface_128.npy").touch()
    assert [p.split(":")[0] for p in preflight.released_file_problems(config)] == ["contexts.released.file"]


def test_the_released_overlay_is_a_valid_paper_config_whose_files_the_preflight_names(tmp_path, monkeypatch):
    """config/released.yaml keeps the paper's rows and adds the published ones; in a folder without the
    files, the pre-flight names each (ElasticFace's weights, which the paper run needs anyway, exist)."""
    from idiff_core.config import load_config, load_schema, validate_config

    config = load_config(REPO / "config" / "config.yaml", [REPO / "config" / "paper.yaml", REPO / "config" / "released.yaml"])
    validate_config(config, load_schema(REPO / "config" / "schema.yaml"))
    paper_rows = _yaml("paper.yaml")["experiments"]
    assert config["experiments"][:len(paper_rows)] == paper_rows
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "weights").mkdir(parents=True)
    (tmp_path / config["embedder"]["weights"]).touch()
    assert [p.split(":")[0] for p in preflight.released_file_problems(config)] == [
        "generators.ca_cpd25.pretrained", "generators.ca_cpd50.pretrained",
        "datasets.released_uniform_cpd25.released.folder", "datasets.released_two_stage_cpd25.released.folder",
        "experiments[7].weights"]


def test_preflight_checks_weight_keys_and_the_evaluation_folds(tmp_path):
    layout = standins.iresnet_layout()
    torch.save(standins.random_weights(layout[:-1], seed=0), tmp_path / "weights.pth")  # one key short
    [problem] = preflight.embedder_problems({"weights": str(tmp_path / "weights.pth"), "model": _yaml("paper.yaml")["embedder"]["model"]})
    assert f"missing key {layout[-1][0]}" in problem
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    [problem] = preflight.embedder_problems({"weights": str(tmp_path / "garbage.pth"), "model": {}})
    assert "not a readable torch checkpoint" in problem
    # one fold of 10 matched then 10 mismatched pairs: as 10 evaluation folds, each holds one kind only
    people = tmp_path / "lfw"
    for name in ("A", "B"):
        (people / name).mkdir(parents=True)
        for k in (1, 2):
            (people / name / f"{name}_{k:04d}.jpg").write_bytes(b"")
    (tmp_path / "pairs.txt").write_text("1\t10\n" + "A\t1\t2\n" * 10 + "A\t1\tB\t1\n" * 10)
    lfw = {"source": "folder", "images": str(people), "pairs": str(tmp_path / "pairs.txt"), "expected_pairs": 20}
    [problem] = preflight.lfw_problems(lfw, n_folds=10)
    assert "fold(s) 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 do not" in problem
    assert preflight.lfw_problems(lfw, n_folds=1) == []


@pytest.mark.slow
def test_rehearsal_runs_the_whole_paper_dag_on_the_standins(paper_standins, tmp_path):
    tree = _standin_tree(paper_standins, tmp_path / "rehearsal")
    try:
        _check_rehearsal(tree)
    finally:
        shutil.rmtree(tree)  # ~20 GB of paper-size checkpoints and resumable state


def _released_rows(tree: Path) -> Path:
    """The rehearsal's experiments plus config/released.yaml's published dataset (its first 5 identities
    x 4 images) trained on, and its evaluation-only rows, on the stand-ins of the released forms."""
    released = _yaml("released.yaml")
    dataset = {**released["datasets"]["released_uniform_cpd25"], "identities": 5, "images_per_identity": 4}
    trained = next(e for e in released["experiments"] if e.get("dataset") == "released_uniform_cpd25")
    evaluated = [e for e in released["experiments"] if "weights" in e]
    override = tree / "released_rows.yaml"
    override.write_text(yaml.safe_dump({
        "datasets": {"released_uniform_cpd25": dataset},
        "experiments": _yaml("rehearsal.yaml")["experiments"] + [{**trained, "width": 3, "depth": 4}, *evaluated]}))
    return override


def _check_rehearsal(tree: Path) -> None:
    result = _snakemake(tree, "--max-threads", "1", "results/eval/lfw.csv", configfiles=(str(_released_rows(tree)),))
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    table = pd.read_csv(tree / "results" / "eval" / "lfw.csv")
    released = ["released_uniform_cpd25_ra", "released_fr_uniform_cpd25", "elasticface_arc"]
    assert list(table["experiment"]) == [e["name"] for e in _yaml("paper.yaml")["experiments"]] + released
    assert table["accuracy_mean"].between(0, 1).all() and (table["pairs"] == 20).all()
    assert table.set_index("experiment").loc["elasticface_arc", "backbone_sha256"] == \
        file_digests(tree / standins.ELASTICFACE).sha256
    benchmarks = tree / "results" / "benchmarks"
    ran = {p.relative_to(benchmarks).parts[0].removesuffix(".tsv") for p in benchmarks.rglob("*.tsv")}
    assert {"fetch_ffhq", "fetch_lfw", "import_embedder", "extract_embeddings", "fetch_autoencoder",
            "split_autoencoder", "train_ldm", "make_contexts", "sample_shard", "align_shard", "align_real",
            "import_released_dataset", "assemble_dataset", "train_fr", "eval_lfw"} <= ran, sorted(ran)
    unet = torch.load(tree / "results" / "ldm" / "ca_cpd25" / "ema.ckpt", weights_only=True, mmap=True)
    assert sum(v.numel() for k, v in unet.items() if k.startswith("eps_model.")) == 216_341_187  # the paper's CA UNet
