"""insightface 10-fold verification protocol: parity with the reference runs and hand-checked rules."""

import numpy as np
import pytest
import torch
from refdata import discover

from idiff_core.evaluation.verification import (
    ACCURACY_THRESHOLDS, VAL_THRESHOLDS, _far_threshold, contiguous_folds, verification_metrics)
from idiff_core.vectors import l2_normalize

EXACT_KEYS = ["accuracy_per_fold", "accuracy_mean", "accuracy_std", "best_threshold_per_fold",
              "best_threshold_index_per_fold", "tpr_mean_over_folds", "fpr_mean_over_folds", "val_mean",
              "val_std", "far_mean", "val_threshold_per_fold", "val_per_fold", "far_per_fold",
              "squared_l2_distances"]


@pytest.mark.parametrize("fixture", discover("lfw", "lfw_protocol_*.pt"))
@pytest.mark.parametrize("path", ["no_flip", "flip_sum"])
def test_matches_reference_protocol(fixture, path):
    ref = torch.load(fixture, weights_only=True)
    raw, flipped = ref["embeddings"].numpy(), ref["embeddings_flipped"].numpy()
    # insightface's test embedding: the raw one, or normalise(raw f(x) + raw f(flip(x))); pair i is rows 2i, 2i+1
    final = l2_normalize(raw if path == "no_flip" else raw.astype(np.float64) + flipped)
    ours = verification_metrics(final[0::2], final[1::2], ref["issame"].numpy(), n_folds=10)
    for key in EXACT_KEYS:
        expected = ref[path][key]
        expected = expected.numpy() if torch.is_tensor(expected) else np.asarray(expected)
        np.testing.assert_allclose(ours[key], expected, rtol=0, atol=1e-12, err_msg=f"{path}.{key}")
    assert 0 <= ours["eer"] <= 0.5


def test_folds_are_contiguous_like_sklearn_kfold():
    folds = contiguous_folds(13, 10)
    assert [len(test) for _, test in folds] == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    assert np.array_equal(np.concatenate([test for _, test in folds]), np.arange(13))
    for train, test in folds:
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(13))
    (train, test), = contiguous_folds(5, 1)
    assert np.array_equal(train, test)
    with pytest.raises(ValueError, match="folds"):
        contiguous_folds(5, 6)


def _pairs_at_distances(dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in 2-D whose squared L2 distance is exactly `dist` (dist = 2 - 2 cos)."""
    angle = np.arccos(1 - np.asarray(dist) / 2)
    e1 = np.stack([np.ones_like(angle), np.zeros_like(angle)], 1)
    e2 = np.stack([np.cos(angle), np.sin(angle)], 1)
    return e1, e2


def test_separable_pairs_give_perfect_accuracy_and_zero_eer():
    issame = np.tile(np.r_[np.ones(5, bool), np.zeros(5, bool)], 4)
    # off every grid point (accuracy grid step 0.01, VAL grid 0.001): arccos/cos round differently by
    # CPU vector unit, so a distance built to sit on a threshold could land on either side of it
    dist = np.where(issame, 0.5049, 2.5049)
    m = verification_metrics(*_pairs_at_distances(dist), issame, n_folds=4)
    assert m["accuracy_mean"] == 1.0 and m["accuracy_std"] == 0.0
    assert m["eer"] == 0.0
    # first argmax: the lowest threshold that accepts every genuine pair, not the middle of the gap
    assert np.all(m["best_threshold_index_per_fold"] == 51)
    # VAL@FAR interpolates between the last FAR-0 threshold and the jump at the impostors' distance
    assert np.all(np.abs(m["val_threshold_per_fold"] - 2.5049) < 2e-3)
    assert m["val_mean"] == 1.0


def test_threshold_comparison_is_strict():
    # genuine pairs exactly at 1.0 are rejected by threshold 1.0 (dist < thr), accepted by 1.01;
    # 1.0 = (0 - 1)^2 and 100 x 0.01 round to exactly 1.0 under IEEE arithmetic on every CPU (no
    # transcendental function involved), so this tie is the protocol's rule, not an accident
    issame = np.array([True, False] * 10)
    e1 = np.zeros((20, 2))
    e2 = np.zeros((20, 2))
    e2[issame, 0] = 1.0  # squared distance exactly 1.0
    e2[~issame, 0] = 1.9
    m = verification_metrics(e1, e2, issame, n_folds=2)
    assert np.all(m["best_threshold_index_per_fold"] == 101)
    assert m["accuracy_mean"] == 1.0


def test_far_threshold_follows_old_scipy_slinear_rule():
    thresholds = np.arange(6, dtype=float)
    far = np.array([0.0, 0.0, 0.0005, 0.0005, 0.002, 0.01])
    # last point with far <= 1e-3 is index 3; interpolate towards index 4
    assert _far_threshold(far, thresholds, 1e-3) == pytest.approx(3 + (1e-3 - 0.0005) / 0.0015)
    assert _far_threshold(np.array([0.0, 0.001, 0.001, 0.5]), thresholds[:4], 1e-3) == 2.0
    assert _far_threshold(np.array([0.0, 0.0005]), thresholds[:2], 1e-3) == 0.0


def test_rejects_mismatched_inputs():
    e = np.eye(4)
    with pytest.raises(ValueError, match="pair labels"):
        verification_metrics(e, e, np.array([True, False]))
    with pytest.raises(ValueError, match="genuine and impostor"):
        verification_metrics(e, e, np.array([True, True, False, False]), n_folds=2)


def test_grids_match_insightface():
    assert len(ACCURACY_THRESHOLDS) == 400 and len(VAL_THRESHOLDS) == 4000
