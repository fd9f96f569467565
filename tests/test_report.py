"""`snakemake --report` on the smoke run: every figure and table is in it, with its caption."""

from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pandas as pd
from PIL import Image

from smk import snakemake

DATASET, GENERATOR = "uniform_cpd25", "ca_cpd25"
MODELS = ("uniform_cpd25", "real_reference", "embedder")
FIGURES = {
    f"results/report/grids/{DATASET}_samples.png": "Samples",
    f"results/report/grids/{DATASET}_aligned.png": "Samples",
    **{f"results/report/curves/{name}.png": "Training curves"
       for name in ("fr_uniform_cpd25", "fr_real_reference", "embedder", f"ldm_{GENERATOR}", "autoencoder")},
    "results/report/verification/lfw/roc.png": "Verification",
    **{f"results/report/verification/lfw/{m}_histogram.png": "Verification" for m in MODELS},
    "results/report/separability/roc.png": "Identity separability",
    f"results/report/separability/{DATASET}_histogram.png": "Identity separability",
    f"results/eval/lfw_contexts/{GENERATOR}_histogram.png": "LFW contexts",
    f"results/eval/lfw_contexts/{GENERATOR}_grid.png": "LFW contexts",
    **{f"results/report/tables/{t}.html": "Tables" for t in ("lfw", "separability", "leakage", "appearance",
                                                             f"lfw_contexts_{GENERATOR}")},
}


def report_entries(archive: zipfile.ZipFile) -> tuple[dict, str]:
    """The report's result entries (path -> name, caption, labels, data_uri) and its HTML."""
    html = archive.read("report/report.html").decode()
    match = re.search(r"var results = (\{.*?\});\n", html, flags=re.S)
    assert match, "report.html holds no results table"
    return json.loads(match.group(1)), html


def test_report_holds_every_figure_and_table_with_a_caption(smoke_run, tmp_path):
    made = snakemake(smoke_run, *FIGURES)  # nothing to do when the default target made them
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    result = snakemake(smoke_run, "--report", str(tmp_path / "report.zip"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        entries, html = report_entries(archive)
        missing = sorted(set(FIGURES) - set(entries))
        assert not missing, f"not in the report: {missing}; present: {sorted(entries)}"
        for path, category in FIGURES.items():
            entry = entries[path]
            assert len(re.sub(r"<[^>]+>", "", entry["caption"]).split()) >= 10, f"{path}: caption too short"
            assert category in html
            data = archive.read(f"report/{entry['data_uri']}")
            if path.endswith(".png"):
                assert Image.open(io.BytesIO(data)).size[0] > 100, path
            else:
                assert b"<table" in data, path
        samples = Image.open(io.BytesIO(archive.read(
            f"report/{entries[f'results/report/grids/{DATASET}_samples.png']['data_uri']}")))
        lfw_table = archive.read(f"report/{entries['results/report/tables/lfw.html']['data_uri']}").decode()
    # smoke: 4 identities x 4 images with 2 px padding
    side = Image.open(next((smoke_run / "results" / "samples" / DATASET).glob("shard*/*/0.png"))).size[0]
    assert samples.size == (4 * (side + 2) + 2, 4 * (side + 2) + 2)
    assert np.asarray(samples).std() > 10  # faces, not an empty canvas
    for model in MODELS:
        assert f"<td>{model}</td>" in lfw_table
    assert "IDiff-Face, end to end" in html and f"generator <tt class=\\\"docutils literal\\\">{GENERATOR}" in html

    contexts = pd.read_csv(smoke_run / f"results/eval/lfw_contexts/{GENERATOR}.csv")
    assert contexts["comparison"].tolist() == ["real_real", "real_variation", "variation_variation",
                                               "real_own_variation"]
    assert (contexts["n_genuine"] > 0).all() and contexts["genuine_mean"].between(-1, 1).all()


def test_bin_benchmark_rules_match_the_lfw_protocol_on_the_same_pairs(smoke_run, tmp_path):
    """The smoke run's aligned LFW-like pairs written as an insightface .bin (pickle of encoded images
    and booleans): the FR models' rows in benchmarks.csv equal their lfw.csv rows, and the report
    gains that benchmark's figures."""
    import pickle

    from idiff_core.evaluation.lfw import pair_images

    paths, first, second, issame = pair_images(smoke_run / "results/aligned/real/lfw",
                                               smoke_run / "results/data/lfw/pairs.txt")
    encoded = [open(paths[i], "rb").read() for pair in zip(first, second) for i in pair]  # PNG files as they are
    (tmp_path / "lfw_aligned.bin").write_bytes(pickle.dumps((encoded, [bool(s) for s in issame]), protocol=2))
    (tmp_path / "bench.yaml").write_text(f"data:\n  benchmarks:\n    lfw_bin: {tmp_path / 'lfw_aligned.bin'}\n")
    config = (str(tmp_path / "bench.yaml"),)
    result = snakemake(smoke_run, configfiles=config)  # the default target: benchmark rows, table, figures
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    rows = pd.read_csv(smoke_run / "results/eval/benchmarks.csv").set_index("experiment")
    lfw = pd.read_csv(smoke_run / "results/eval/lfw.csv").set_index("experiment")
    assert sorted(rows.index) == sorted(MODELS) and (rows["benchmark"] == "lfw_bin").all()
    for model in ("uniform_cpd25", "real_reference"):  # FR models see the same aligned images in both
        with np.load(smoke_run / f"results/eval/benchmarks/lfw_bin/{model}_scores.npz") as from_bin, \
                np.load(smoke_run / f"results/eval/lfw/{model}_scores.npz") as from_folder:
            np.testing.assert_array_equal(from_bin["issame"], from_folder["issame"])
            # equal up to float noise of other batch compositions
            np.testing.assert_allclose(from_bin["squared_l2_distances"], from_folder["squared_l2_distances"],
                                       atol=1e-5)
        assert rows.loc[model, "pairs"] == lfw.loc[model, "pairs"] == issame.size
        assert abs(rows.loc[model, "accuracy_mean"] - lfw.loc[model, "accuracy_mean"]) <= 0.011
    paper = pd.read_csv(smoke_run / "results/eval/benchmarks_paper.csv").set_index("experiment")
    assert list(paper.columns) == ["lfw_bin", "mean"]
    assert paper.loc["uniform_cpd25", "lfw_bin"] == 100 * rows.loc["uniform_cpd25", "accuracy_mean"]

    report = snakemake(smoke_run, "--report", str(tmp_path / "report.zip"), configfiles=config)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    with zipfile.ZipFile(tmp_path / "report.zip") as archive:
        entries, _ = report_entries(archive)
    expected = {"results/report/verification/bin_lfw_bin/roc.png", "results/report/tables/benchmarks.html",
                "results/report/tables/benchmarks_paper.html"}
    assert expected <= set(entries), sorted(expected - set(entries))


def test_identity_grid_orders_identities_by_name_and_images_by_number(tmp_path):
    from idiff_core.evaluation.figures import identity_grid
    from idiff_core.io import read_rgb, write_png

    for shard, identity in ((0, "00001"), (1, "00000"), (0, "00002")):
        for j in (0, 2, 10):  # 10 sorts after 2 numerically
            write_png(tmp_path / f"shard{shard}" / identity / f"{j}.png",
                      np.full((8, 8, 3), 10 * int(identity) + j, np.uint8))
    identity_grid([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "grid.png", identities=2, images=3)
    grid = read_rgb(tmp_path / "grid.png")
    assert grid.shape == (2 * 10 + 2, 3 * 10 + 2, 3)
    tiles = [[int(grid[2 + 10 * r, 2 + 10 * c, 0]) for c in range(3)] for r in range(2)]
    assert tiles == [[0, 2, 10], [10, 12, 20]]


def test_roc_thinning_keeps_the_ends_and_the_order():
    from idiff_core.evaluation.figures import _thin_curve

    fmr = np.concatenate([[0.0], np.logspace(-6, 0, 100_000)])
    tmr = np.sqrt(fmr)
    thin_fmr, thin_tmr = _thin_curve(fmr[::-1].copy(), tmr[::-1].copy(), points=500)
    assert thin_fmr.size <= 503 and thin_fmr[0] == 0 and thin_fmr[-1] == 1
    assert np.all(np.diff(thin_fmr) >= 0) and np.allclose(thin_tmr, np.sqrt(thin_fmr))
    assert (thin_fmr[1:] < 1e-4).sum() > 50  # the low-FMR region the log axis shows keeps its points


def test_table_html_rounds_floats_and_keeps_text(tmp_path):
    from idiff_core.evaluation.figures import table_html

    pd.DataFrame({"experiment": ["a"], "accuracy_mean": [0.123456789], "cpd": [np.nan]}).to_csv(tmp_path / "t.csv",
                                                                                             index=False)
    table_html(tmp_path / "t.csv", tmp_path / "t.html")
    html = (tmp_path / "t.html").read_text()
    assert "<td>a</td>" in html and "<td>0.1235</td>" in html and "nan" not in html.lower()
