"""Benchmark inputs: LFW pairs.txt + image folders, and insightface .bin files read without risk."""

import os
import pickle
import struct

import cv2
import numpy as np
import pytest

from idiff_core.data.benchmarks import (
    LfwPair, UnsafePickleError, lfw_image_path, read_bin, read_lfw_pairs)


def test_reads_the_real_lfw10_pairs_and_finds_every_image(faces):
    pairs, n_folds = read_lfw_pairs(faces / "lfw10_pairs.txt")
    assert n_folds == 10 and len(pairs) == 200
    assert pairs[0] == LfwPair("Gerhard_Schroeder", 3, "Gerhard_Schroeder", 7, True)
    assert pairs[10] == LfwPair("Tony_Blair", 5, "Colin_Powell", 7, False)
    issame = np.array([p.issame for p in pairs]).reshape(10, 20)
    assert issame[:, :10].all() and not issame[:, 10:].any()
    missing = set()
    for p in pairs:
        for name, idx in ((p.name1, p.idx1), (p.name2, p.idx2)):
            try:
                assert lfw_image_path(faces / "lfw10", name, idx).name == f"{name}_{idx:04d}.jpg"
            except FileNotFoundError as err:
                assert f"{name}_{idx:04d}" in str(err)
                missing.add((name, idx))
    # this subset lacks Jacques_Chirac_0006/0010 (it has _0019/_0020) although its pairs use them:
    # such pairs must fail loudly, naming the file, never silently pick another photo
    assert missing <= {("Jacques_Chirac", 6), ("Jacques_Chirac", 10)}


def test_reads_single_count_header_and_any_whitespace(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("2\nAnn 1 2\nBob\t3\t4\nAnn\t1\tBob\t12\nCy 2 Ann 3\n")
    pairs, n_folds = read_lfw_pairs(path)
    assert n_folds == 1
    assert [p.issame for p in pairs] == [True, True, False, False]
    assert pairs[2] == LfwPair("Ann", 1, "Bob", 12, False)


@pytest.mark.parametrize("text, message", [
    ("folds ten\nA 1 2\n", "first line"),
    ("1\t2\nA 1 2\nB 1 2\nA 1 B 2\n", "found 3"),
    ("1\nA 1 2 3 4\nA 1 B 2\n", "line 2"),
    ("1\nA one 2\nA 1 B 2\n", "line 2"),
])
def test_malformed_pairs_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_lfw_pairs(path)


def test_image_path_accepts_any_extension_and_names_the_missing_file(tmp_path):
    (tmp_path / "Ann").mkdir()
    (tmp_path / "Ann" / "Ann_0012.PNG").write_bytes(b"")
    assert lfw_image_path(tmp_path, "Ann", 12) == tmp_path / "Ann" / "Ann_0012.PNG"
    with pytest.raises(FileNotFoundError, match="Ann_0003"):
        lfw_image_path(tmp_path, "Ann", 3)
    with pytest.raises(FileNotFoundError, match="Bob_0001"):
        lfw_image_path(tmp_path, "Bob", 1)


def _images(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(n)]


def _encode(rgb: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, rgb[..., ::-1].copy())
    assert ok
    return data.tobytes()


def _python2_pickle(bins: list[bytes], issame: list[bool]) -> bytes:
    """The byte stream Python 2's pickle.dump((bins, issame), f, protocol=2) writes (str = BINSTRING)."""
    out = [b"\x80\x02", b"](", *[b"T" + struct.pack("<i", len(b)) + b for b in bins], b"e", b"](",
           *[b"\x88" if s else b"\x89" for s in issame], b"e", b"\x86."]
    return b"".join(out)


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("bool_type", [bool, np.bool_])
def test_bin_written_by_python3_reads_back(tmp_path, protocol, bool_type):
    images = _images(4)
    path = tmp_path / "set.bin"
    with open(path, "wb") as fh:
        pickle.dump(([_encode(im, ".png") for im in images], [bool_type(True), bool_type(False)]), fh,
                    protocol=protocol)
    read, issame = read_bin(path)
    assert read.dtype == np.uint8 and read.shape == (4, 112, 112, 3)
    np.testing.assert_array_equal(read, np.stack(images))  # PNG is lossless and colours are RGB
    np.testing.assert_array_equal(issame, [True, False])


def test_bin_written_by_python2_with_jpegs_reads_back(tmp_path):
    flat = [np.full((112, 112, 3), colour, np.uint8) for colour in ([200, 30, 30], [30, 200, 30])]
    path = tmp_path / "lfw.bin"
    path.write_bytes(_python2_pickle([_encode(im, ".jpg") for im in flat], [False]))
    read, issame = read_bin(path)
    assert read.shape == (2, 112, 112, 3) and issame.tolist() == [False]
    assert np.abs(read.astype(int) - np.stack(flat)).max() <= 4  # JPEG, decoded as RGB not BGR


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_malicious_bin_is_refused_without_running(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    with open(path, "wb") as fh:
        pickle.dump(([_encode(_images(1)[0], ".png"), _Exploit(target)], [True]), fh)
    with pytest.raises(UnsafePickleError, match="system"):
        read_bin(path)
    assert not target.exists()


@pytest.mark.parametrize("payload", [
    (["not bytes", b"x"], [True]),  # str images
    ([b"a", b"b"], [1]),  # int instead of bool
    ([b"a", b"b", b"c"], [True]),  # odd image count
    {"images": []},
])
def test_bins_with_the_wrong_content_are_refused(tmp_path, payload):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(ValueError, match="odd.bin"):
        read_bin(path)


def test_bins_with_other_globals_or_garbage_are_refused(tmp_path):
    path = tmp_path / "array.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b"], np.array([True]))))
    with pytest.raises(UnsafePickleError, match="refusing"):
        read_bin(path)
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="not a readable"):
        read_bin(path)
    path.write_bytes(pickle.dumps(([b"\x00\x01", b"\x02"], [True])))
    with pytest.raises(ValueError, match="image 0 cannot be decoded"):
        read_bin(path)


def test_paper_table_pivots_benchmarks_and_averages_replicates():
    import pandas as pd

    from idiff_core.evaluation.tables import benchmark_table

    rows = pd.DataFrame([{"model": "m1", "benchmark": "lfw", "accuracy_mean": 0.95},
                         {"model": "m1", "benchmark": "agedb_30", "accuracy_mean": 0.7},
                         {"model": "m2", "benchmark": "lfw", "accuracy_mean": 0.8},
                         {"model": "m2", "benchmark": "lfw", "accuracy_mean": 0.7}])  # two replicates
    paper = benchmark_table(rows, order=["lfw", "agedb_30"])
    assert list(paper.columns) == ["model", "lfw", "agedb_30", "mean"]
    row = paper.set_index("model").loc["m1"]
    assert row["lfw"] == pytest.approx(95.0) and row["mean"] == pytest.approx(82.5)
    assert paper.set_index("model").loc["m2", "mean"] == pytest.approx(75.0)


def _tiny_backbone(path) -> "BackboneSpec":
    import torch

    from idiff_core.evaluation.lfw import BackboneSpec
    from idiff_core.models.iresnet import iresnet

    torch.manual_seed(0)
    torch.save(iresnet([1, 1, 1, 1], num_features=16, base_width=8).state_dict(), path)
    return BackboneSpec(arch=[1, 1, 1, 1], num_features=16, base_width=8, input_size=112)


def test_bin_benchmark_stage_scores_pairs_in_insightface_order(tmp_path):
    """A synthetic .bin through evaluate_bin: pair i = images (2i, 2i+1), the protocol on their
    flip-summed embeddings, one row per (model, benchmark), and the long + paper-style tables."""
    import pandas as pd

    from idiff_core.embeddings import embed_images
    from idiff_core.evaluation.lfw import VerificationSettings, evaluate_bin
    from idiff_core.evaluation.tables import write_benchmark_tables
    from idiff_core.evaluation.verification import verification_metrics
    from idiff_core.models.iresnet import load_backbone

    spec = _tiny_backbone(tmp_path / "backbone.pt")
    faces = _images(20)
    issame = [k % 2 == 0 for k in range(20)]  # every test fold of 10 holds both kinds
    images = [im for k, same in enumerate(issame) for im in (faces[k], faces[k] if same else faces[(k + 7) % 20])]
    # a .bin as insightface writes it: (list of encoded images, list of booleans), plain pickle types
    (tmp_path / "toy.bin").write_bytes(pickle.dumps(([_encode(im, ".png") for im in images], issame)))
    settings = VerificationSettings(n_folds=10, far_target=1e-3, flip_sum=True, batch_size=8)
    rows = []
    for name in ("toy_a", "toy_b"):
        row = {"experiment": "m1", "backbone": "tiny", "benchmark": name}
        evaluate_bin(tmp_path / "backbone.pt", spec, tmp_path / "toy.bin", row, tmp_path / f"{name}.csv",
                     tmp_path / f"{name}.npz", settings, "cpu")
        rows.append(tmp_path / f"{name}.csv")

    model = load_backbone(tmp_path / "backbone.pt", spec.arch, spec.num_features, base_width=spec.base_width)
    embeddings = embed_images(model, np.stack(images), 8, "cpu", flip_sum=True)
    expected = verification_metrics(embeddings[0::2], embeddings[1::2], np.array(issame), 10, 1e-3)
    row = pd.read_csv(tmp_path / "toy_a.csv").iloc[0]
    assert row["pairs"] == 20 and row["benchmark"] == "toy_a"
    assert row["accuracy_mean"] == pytest.approx(expected["accuracy_mean"], abs=1e-12)
    assert row["accuracy_mean"] == 1.0  # genuine pairs are the same image: distance 0
    with np.load(tmp_path / "toy_a.npz") as scores:
        np.testing.assert_allclose(scores["squared_l2_distances"], expected["squared_l2_distances"], atol=1e-12)
        np.testing.assert_array_equal(scores["issame"], issame)
        assert np.all(scores["squared_l2_distances"][0::2] < 1e-10)

    paper = write_benchmark_tables(rows, tmp_path / "benchmarks.csv", tmp_path / "paper.csv")
    long = pd.read_csv(tmp_path / "benchmarks.csv")
    assert list(long["benchmark"]) == ["toy_a", "toy_b"] and list(long.columns[:3]) == ["experiment", "backbone",
                                                                                         "benchmark"]
    assert list(paper.columns) == ["experiment", "toy_a", "toy_b", "mean"]
    assert paper.iloc[0]["mean"] == pytest.approx(100.0)


def test_bin_benchmark_stage_refuses_a_malicious_bin(tmp_path):
    from idiff_core.evaluation.lfw import VerificationSettings, evaluate_bin

    spec = _tiny_backbone(tmp_path / "backbone.pt")
    target = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_encode(_images(1)[0], ".png"), _Exploit(target)], [True])))
    with pytest.raises(UnsafePickleError, match="system"):
        evaluate_bin(tmp_path / "backbone.pt", spec, tmp_path / "evil.bin", {"experiment": "m"},
                     tmp_path / "row.csv", tmp_path / "s.npz",
                     VerificationSettings(n_folds=10, far_target=1e-3, flip_sum=True, batch_size=8), "cpu")
    assert not target.exists() and not (tmp_path / "row.csv").exists()
