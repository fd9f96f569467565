"""pyeer-semantics separability statistics, identity pairs, and identity leakage."""

import numpy as np
import pytest
import torch
from refdata import discover

from idiff_core.evaluation.leakage import identity_leakage, nearest_neighbours
from idiff_core.evaluation.quality import identity_consistency
from idiff_core.evaluation.separability import eer_stats, identity_pairs, separability_report

FLOAT32_KEYS = ["gmean", "gstd", "imean", "istd", "decidability"]


@pytest.mark.parametrize("fixture", discover("pyeer", "pyeer_*.pt"))
def test_matches_pyeer_reference(fixture):
    ref = torch.load(fixture, weights_only=True)
    ours = eer_stats(ref["genuine_scores"].numpy(), ref["impostor_scores"].numpy())
    expected = ref["expected"]
    for key, value in expected.items():
        if key.endswith(("__dtype", "_float64")) or key in ("FDR", "n_unique_thresholds"):
            continue
        if key in FLOAT32_KEYS:
            assert ours[key].dtype == np.float32, key
            assert float(ours[key]) == pytest.approx(value, rel=1e-6), key
        else:
            assert float(ours[key]) == pytest.approx(value, abs=1e-12), key
    assert ours["FDR"] == pytest.approx(expected["FDR"], rel=1e-6)
    assert len(ours["thresholds"]) == expected["n_unique_thresholds"]
    for ours_key, ref_key in [("thresholds", "roc_thresholds"), ("fmr", "roc_fmr"), ("fnmr", "roc_fnmr")]:
        np.testing.assert_allclose(ours[ours_key], ref[ref_key].numpy(), rtol=0, atol=1e-12)


def test_toy_scores_with_hand_computed_values():
    # thresholds .1 .2 .7 .75 .8 .9; FMR 1 2/3 1/3 1/3 0 0; FNMR 0 0 0 1/3 1/3 2/3
    s = eer_stats(np.array([0.9, 0.8, 0.7]), np.array([0.1, 0.2, 0.75]))
    assert s["eer"] == pytest.approx(1 / 3) and s["eer_th"] == 0.75  # FMR == FNMR exactly at .75
    assert s["fmr0"] == pytest.approx(1 / 3) and s["fmr0_th"] == 0.8  # first index with FMR 0
    assert s["fnmr0"] == pytest.approx(1 / 3) and s["fnmr0_th"] == 0.7  # LAST index with FNMR 0
    assert s["auc"] == pytest.approx(8 / 9)
    assert s["gmean"] == pytest.approx(0.8) and s["gstd"] == pytest.approx(np.sqrt(0.02 / 3))
    assert s["imean"] == pytest.approx(0.35) and s["istd"] == pytest.approx(np.sqrt(0.245 / 3))
    assert s["FDR"] == pytest.approx(0.45 ** 2 / (0.02 / 3 + 0.245 / 3))
    assert s["decidability"] == pytest.approx(0.45 / np.sqrt((0.02 / 3 + 0.245 / 3) / 2))


def test_eer_picks_the_better_side_of_the_crossing():
    # FMR 1 .75 .75 .5 .25 0 0, FNMR 0 0 1/3 1/3 1/3 1/3 2/3: crossing between index 3 and 4,
    # index 4 has the smaller FMR + FNMR, so EER = (0.25 + 1/3) / 2 with low = FMR, high = FNMR
    s = eer_stats(np.array([0.5, 0.9, 0.95]), np.array([0.1, 0.6, 0.7, 0.8]))
    assert s["eer"] == pytest.approx((0.25 + 1 / 3) / 2)
    assert (s["eer_low"], s["eer_high"]) == pytest.approx((0.25, 1 / 3))
    assert s["eer_th"] == 0.8


def test_curves_that_never_cross_warn_and_report_eer_one_like_pyeer():
    # FMR 1, 1/2 and FNMR 0, 0: FMR never falls to FNMR
    with pytest.warns(RuntimeWarning, match="do not cross"):
        s = eer_stats(np.array([0.9]), np.array([0.1, 0.9]))
    assert (s["eer"], s["eer_low"], s["eer_high"], s["eer_th"]) == (1.0, 1.0, 1.0, 0.1)


def test_identity_pairs_genuine_all_and_impostors_seeded():
    labels = np.array(["b", "a", "b", "a", "b", "c", "d", "d"])
    genuine, impostor = identity_pairs(labels, seed=7)
    assert sorted(map(tuple, genuine)) == [(0, 2), (0, 4), (1, 3), (2, 4), (6, 7)]
    assert impostor.shape == (5, 2)
    assert np.all(labels[impostor[:, 0]] != labels[impostor[:, 1]])
    assert np.all(impostor[:, 0] < impostor[:, 1])
    assert len({tuple(p) for p in impostor}) == 5
    assert np.array_equal(identity_pairs(labels, seed=7)[1], impostor)
    assert not np.array_equal(identity_pairs(labels, seed=8)[1], impostor)


def test_identity_pairs_returns_all_cross_pairs_when_there_are_few():
    genuine, impostor = identity_pairs(np.array([0, 0, 0, 0, 1]), seed=0)
    assert len(genuine) == 6
    assert sorted(map(tuple, impostor)) == [(0, 4), (1, 4), (2, 4), (3, 4)]


def _clustered(n_ids: int, per_id: int, spread: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, 64))
    labels = np.repeat(np.arange(n_ids), per_id)
    return centres[labels] + spread * rng.standard_normal((labels.size, 64)), labels


def test_separability_report_on_clustered_embeddings():
    embeddings, labels = _clustered(20, 6, spread=0.1)
    report = separability_report(embeddings, labels, seed=3)
    assert report["n_genuine"] == 20 * 15 == report["n_impostor"]
    assert report["eer"] == 0.0 and report["auc"] == pytest.approx(1.0)
    assert report["gmean"] > 0.95 and abs(report["imean"]) < 0.3
    assert report["decidability"] > 5 and report["FDR"] > 10
    assert report["genuine_scores"].dtype == np.float32
    noisy = separability_report(*_clustered(20, 6, spread=3.0), seed=3)
    assert noisy["eer"] > report["eer"] and noisy["decidability"] < report["decidability"]
    with pytest.raises(ValueError, match="two identities"):
        separability_report(embeddings[:6], labels[:6], seed=3)


def test_leakage_flags_an_identity_copied_from_training():
    rng = np.random.default_rng(1)
    train = rng.standard_normal((300, 32)).astype(np.float32)
    synth = rng.standard_normal((40, 32)).astype(np.float32)
    labels = np.repeat([f"id{i:02d}" for i in range(10)], 4)
    synth[6] = 2.5 * train[123]  # one image of id01 reproduces training face 123
    names = [f"{i:05d}" for i in range(300)]
    table, summary = identity_leakage(synth, labels, train, threshold=0.9, train_names=names)
    row = table.set_index("identity").loc["id01"]
    assert row["max_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert row["nearest_train_name"] == "00123" and row["n_images"] == 4
    assert summary["count_above_threshold"] == 1 and summary["fraction_above_threshold"] == 0.1
    assert summary["max"] == pytest.approx(1.0, abs=1e-6) and summary["n_identities"] == 10
    assert summary["median"] < 0.9

    # a whole identity copied: its mean embedding also matches
    synth[8:12] = train[200] * np.array([[1.0], [2.0], [3.0], [4.0]], dtype=np.float32)
    table, summary = identity_leakage(synth, labels, train, threshold=0.9, train_names=names, per_identity="mean")
    assert table.set_index("identity").loc["id02", "nearest_train_name"] == "00200"
    assert summary["count_above_threshold"] == 1 and summary["per_identity"] == "mean"


def test_identity_consistency_by_hand():
    """Three contexts on the axes; samples a, b land on their own, c's sample sits between b and c."""
    contexts = np.array([[2.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], dtype=np.float32)  # normalised inside
    half = np.float32(np.sqrt(0.5))
    samples = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, half, half], [0, 1.0, 0]], dtype=np.float32)
    scores = identity_consistency(samples, np.array(["a", "b", "c", "a"]), ["a", "b", "c"], contexts, seed=0)
    assert scores["consistency_mean"] == pytest.approx((1 + 1 + half + 0) / 4)
    # a: both others farther (1); b: 1; c: tie with b (0.5) + a farther (1) -> 0.75; 4th (a, lands on b): 0.25
    assert scores["context_auc"] == pytest.approx((1 + 1 + 0.75 + 0.25) / 4)
    assert scores["context_rank1"] == 0.5 and scores["context_count"] == 3
    # the random other context is never the sample's own
    assert scores["random_context_mean"] < scores["consistency_mean"]


def test_identity_consistency_chunks_do_not_change_the_result():
    rng = np.random.default_rng(4)
    contexts = rng.standard_normal((30, 8)).astype(np.float32)
    identities = np.array([f"{i % 30:03d}" for i in range(70)])
    samples = contexts[np.arange(70) % 30] + rng.standard_normal((70, 8)).astype(np.float32)
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)
    ids = [f"{i:03d}" for i in range(30)]
    whole = identity_consistency(samples, identities, ids, contexts, seed=1)
    assert whole == identity_consistency(samples, identities, ids, contexts, seed=1, chunk=7)
    assert 0.5 < whole["context_auc"] < 1.0 and 1 / 30 < whole["context_rank1"] < 1.0


def test_nearest_neighbours_blocks_do_not_change_the_result():
    rng = np.random.default_rng(2)
    queries, refs = rng.standard_normal((37, 16)), rng.standard_normal((50, 16))
    whole = nearest_neighbours(queries, refs)
    tiny_blocks = nearest_neighbours(queries, refs, max_block_bytes=4 * 50 * 3)
    np.testing.assert_array_equal(whole[1], tiny_blocks[1])
    np.testing.assert_allclose(whole[0], tiny_blocks[0], rtol=1e-6)
    unit_q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    unit_r = refs / np.linalg.norm(refs, axis=1, keepdims=True)
    np.testing.assert_array_equal(whole[1], np.argmax(unit_q @ unit_r.T, axis=1))


def test_histogram_and_roc_figures_are_written(tmp_path):
    from idiff_core.evaluation.plots import roc_curve_plot, score_histogram

    rng = np.random.default_rng(4)
    genuine, impostor = rng.normal(0.6, 0.1, 500), rng.normal(0.0, 0.1, 2000)
    score_histogram({"genuine": genuine, "impostor": impostor}, tmp_path / "hist.png", "toy")
    stats = eer_stats(genuine, impostor)
    roc_curve_plot({"toy": (stats["fmr"], 1 - stats["fnmr"])}, tmp_path / "roc.svg", "toy ROC")
    assert (tmp_path / "hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (tmp_path / "roc.svg").read_bytes()[:2000]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hist.png", "roc.svg"]  # no temp files left
    with pytest.raises(ValueError, match="non-empty"):
        score_histogram({"genuine": genuine, "impostor": []}, tmp_path / "bad.png", "bad")
    with pytest.raises(ValueError, match="'toy'"):
        roc_curve_plot({"toy": (stats["fmr"], stats["fnmr"][:-1])}, tmp_path / "bad.png", "bad")


def test_l2_normalize_keeps_zero_rows_unless_told_to_refuse_them():
    from idiff_core.vectors import l2_normalize

    rows = np.array([[3.0, 4.0], [0.0, 0.0], [0.0, 2.0]])
    np.testing.assert_allclose(l2_normalize(rows), [[0.6, 0.8], [0.0, 0.0], [0.0, 1.0]])
    assert l2_normalize(rows, np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        l2_normalize(rows, refuse_zero=True)
    with pytest.raises(ValueError, match="row 3 is all zeros"):  # counted across blocks
        l2_normalize(np.array([[1.0, 0.0]] * 3 + [[0.0, 0.0]]), block_rows=2, refuse_zero=True)
