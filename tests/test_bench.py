"""The benchmark script: `--quick` writes every family's CSV with sane rows; the parsing helpers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from idiff_core import bench

REPO = Path(__file__).resolve().parents[1]
MACHINE_COLUMNS = {"timestamp", "cpu_count", "torch_threads", "torch_version", "device", "cpu_model"}
SNAKEMAKE_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


@pytest.fixture(autouse=True)
def _restore_threads():
    """`--threads 1` (below) keeps the shared CI cores from being oversubscribed; later tests get theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _write_benchmark(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SNAKEMAKE_HEADER + "".join(line + "\n" for line in lines))


def _args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--device", "cpu", "--threads", "1", "--out", str(tmp_path / "out"), "--config", str(REPO / "config/config.yaml"),
            "--paper-config", str(REPO / "config/paper.yaml"), "--benchmarks", str(tmp_path / "benchmarks"),
            "--contexts", str(tmp_path / "absent.npz"), "--backbone", str(tmp_path / "absent.pt"), *extra]


def test_quick_writes_every_family(tmp_path):
    _write_benchmark(tmp_path / "benchmarks/train_ldm/ca_cpd25.tsv",
                     "120.5\t0:02:00\t2048.0\t4096.0\t1900.0\t1950.0\t1.0\t2.0\t180.0\t217.0")
    _write_benchmark(tmp_path / "benchmarks/sample_shard/uniform_cpd25/shard0.tsv",
                     "10.0\t0:00:10\t500.0\t900.0\tNA\tNA\t0.1\t0.2\t95.0\t9.5",
                     "14.0\t0:00:14\t700.0\t900.0\tNA\tNA\t0.1\t0.2\t95.0\t13.5")
    results = bench.main(_args(tmp_path, "--quick"))

    out = tmp_path / "out"
    for family in bench.FAMILIES:
        table = pd.read_csv(out / f"{family}.csv")
        assert len(table) == len(results[family]) > 0, family
        assert MACHINE_COLUMNS <= set(table.columns), family
        assert (table["cpu_count"] > 0).all() and (table["device"] == "cpu").all()
        metric = bench.SUMMARY_METRIC[family]
        assert (table[metric] > 0).all() and table[metric].map(math.isfinite).all(), family
    assert not list(out.glob(".*part*")), "no temporary files are left behind"

    assert pd.read_csv(out / "ldm_training.csv")["case"].tolist() == ["demo"]
    sampling = pd.read_csv(out / "sampling.csv")
    assert sampling["method"].tolist() == ["ddpm", "ddim", "dpmsolver++"]
    assert sampling["note"].str.contains("tiny random").all() and sampling["context_auc"].isna().all()
    alignment = pd.read_csv(out / "alignment.csv")
    assert alignment["min_face_size"].tolist() == [20, 1] and alignment["images"].tolist() == [16, 2]
    assert (alignment["landmark_error_iod_mean"] < 0.5).all()  # the world's faces are found where they are
    assert pd.read_csv(out / "verification.csv")["pairs"].tolist() == [6000]

    rules = pd.read_csv(out / "rules.csv")
    assert rules["rule"].tolist() == ["train_ldm", "sample_shard"]  # slowest first
    assert rules["wildcards"].tolist() == ["ca_cpd25", "uniform_cpd25/shard0"]
    assert rules["seconds"].tolist() == [120.5, 12.0]  # repeats are averaged
    assert rules["max_rss_mb"].tolist() == [2048.0, 600.0] and rules["repeats"].tolist() == [1, 2]
    assert math.isnan(rules["max_uss_mb"][1])  # "NA" in the benchmark file


def test_only_selects_families_and_rules_skip_without_folder(tmp_path, capsys):
    results = bench.main(_args(tmp_path, "--quick", "--only", "rules,verification"))
    assert list(results) == ["rules", "verification"] and results["rules"] == []
    assert "skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["verification.csv"]


def test_unknown_family_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench.main(_args(tmp_path, "--only", "sampling,speed"))
    assert "speed" in capsys.readouterr().err


def test_machine_info_names_the_machine():
    info = bench.machine_info(bench.resolve_device("cpu"))
    assert info["device"] == "cpu" and info["cpu_count"] >= 1 and info["torch_threads"] >= 1
    assert info["torch_version"] and info["timestamp"].endswith("+00:00")


def test_sampling_scores_identity_consistency_of_a_given_generator(tmp_path):
    """The trained-generator path: files in the workflow's layouts, config merged from --configfile; each
    row's consistency is that of the images its sampler makes from the seeded noise, embedded."""
    from idiff_core.embeddings import embed_images
    from idiff_core.evaluation.quality import identity_consistency
    from idiff_core.generation import SamplerSettings
    from idiff_core.io import save_matrix
    from idiff_core.models.iresnet import BackboneSpec, iresnet
    from idiff_core.runtime import derive_seed

    spec = bench._tiny_generator(tmp_path, 25)
    torch.manual_seed(0)
    torch.save(iresnet([1, 1, 1, 1], base_width=16).state_dict(), tmp_path / "backbone.pt")
    contexts = bench.uniform_contexts(2, 512, 0)
    save_matrix(tmp_path / "contexts.npz", ["a", "b"], contexts)
    embedder = {"arch": [1, 1, 1, 1], "num_features": 512, "base_width": 16, "input_size": 112}
    override = tmp_path / "tiny.yaml"
    override.write_text(yaml.safe_dump({"ldm": {"unet": bench.TINY_UNET}, "generators": {"ca_cpd25": {"unet": {}}},
                                        "autoencoder": {"model": bench.TINY_VQ}, "data": {"world": {"image_size": 32}},
                                        "sampling": {"sampler": {"guidance_scale": 2.0}},
                                        "embedder": {"model": embedder}}))
    args = _args(tmp_path, "--quick", "--only", "sampling", "--configfile", str(override),
                 "--generator", str(spec.checkpoint), "--decoder", str(spec.decoder),
                 "--contexts", str(tmp_path / "contexts.npz"), "--backbone", str(tmp_path / "backbone.pt"))
    rows = bench.main(args)["sampling"]
    assert [r["steps"] for r in rows] == [25, 25, 20]  # capped at the checkpoint's T

    pipeline = spec.load("cpu")
    backbone = BackboneSpec(**embedder).load(tmp_path / "backbone.pt")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())["sampling"]
    seeds = [derive_seed(config["seed"], "bench_sampling", i) for i in range(2)]
    for row in rows:
        assert row["note"] == "trained generator" and row["generator"] == str(spec.checkpoint)
        sampler = SamplerSettings(row["method"], row["steps"], 0.0, 2.0, 2, config["sampler"]["clip_x0"],
                                  config["sampler"]["decode_batch_size"])
        images = pipeline(torch.from_numpy(contexts), seeds, sampler)
        expected = identity_consistency(embed_images(backbone, images, 64, "cpu", flip_sum=False),
                                        np.array(["00000", "00001"]), ["00000", "00001"], contexts, config["seed"])
        assert row["guidance_scale"] == 2.0 and row["context_count"] == 2
        for column in bench.CONSISTENCY_COLUMNS:
            assert row[column] == pytest.approx(expected[column], abs=1e-6), (row["method"], column)
