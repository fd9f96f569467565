"""Pair verification with insightface's 10-fold protocol (LFW, AgeDB-30, CFP-FP, CA-LFW, CP-LFW).

The paper's accuracies come from insightface's `verification.py`; `verification_metrics` repeats it
exactly so our numbers are comparable:

* squared L2 distance between the two (already final) embeddings of a pair, in float64;
* folds = contiguous blocks of pair indices (sklearn `KFold(n, shuffle=False)`: the first
  `n_pairs % n_folds` folds are one pair longer); with one fold, train = test = all pairs;
* accuracy: thresholds `arange(0, 4, 0.01)`, a pair is predicted genuine iff `dist < threshold`
  (strict), the fold's threshold is the FIRST argmax of train accuracy, the reported accuracy is the
  test accuracy there; mean and population std (ddof 0) over folds;
* VAL@FAR: thresholds `arange(0, 4, 0.001)`; per fold the threshold where the train FAR reaches the
  target, interpolated as old scipy's `interp1d(kind='slinear')` did on insightface's duplicate-
  laden FAR curve (see `_far_threshold`), or 0 when the train FAR never reaches it.

EER (our addition, not in insightface): pyeer's EER rule (`separability.eer_stats`) over ALL pairs
with similarity = -squared distance (for unit vectors, a monotone map of cosine = 1 - d/2).
"""

from __future__ import annotations

import numpy as np

from idiff_core.evaluation.separability import eer_stats

__all__ = ["ACCURACY_THRESHOLDS", "VAL_THRESHOLDS", "contiguous_folds", "verification_metrics"]

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


def contiguous_folds(n_items: int, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index arrays as sklearn KFold(shuffle=False); one fold means train = test = all."""
    indices = np.arange(n_items)
    if n_folds == 1:
        return [(indices, indices)]
    if not 2 <= n_folds <= n_items:
        raise ValueError(f"cannot split {n_items} pairs into {n_folds} folds")
    sizes = np.full(n_folds, n_items // n_folds)
    sizes[: n_items % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [(np.concatenate([indices[:lo], indices[hi:]]), indices[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _rates(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """TPR, FPR and accuracy for each threshold (predicted genuine iff dist < threshold)."""
    accept = dist[None, :] < thresholds[:, None]
    tp = (accept & issame).sum(1)
    fp = (accept & ~issame).sum(1)
    n_same, n_diff = int(issame.sum()), int((~issame).sum())
    tn = n_diff - fp
    tpr = tp / n_same if n_same else np.zeros(len(thresholds))
    fpr = fp / n_diff if n_diff else np.zeros(len(thresholds))
    return {"tpr": tpr, "fpr": fpr, "accuracy": (tp + tn) / dist.size}


def _far_threshold(far: np.ndarray, thresholds: np.ndarray, far_target: float) -> float:
    """The threshold where the train FAR reaches `far_target`, as scipy < 1.9 interp1d('slinear').

    FAR is non-decreasing in the threshold with many repeats; old scipy then interpolated between the
    LAST point with FAR <= target and the next one (target hit exactly: that point's threshold).
    """
    if far.max() < far_target:
        return 0.0
    order = np.argsort(far, kind="stable")
    far, thresholds = far[order], thresholds[order]
    below = np.flatnonzero(far <= far_target)
    if below.size == 0:
        raise ValueError(f"train FAR starts above {far_target} at threshold {thresholds[0]}: cannot interpolate")
    a = int(below[-1])
    if far[a] == far_target:
        return float(thresholds[a])
    b = a + 1
    return float(thresholds[a] + (far_target - far[a]) * (thresholds[b] - thresholds[a]) / (far[b] - far[a]))


def verification_metrics(embeddings1: np.ndarray, embeddings2: np.ndarray, issame: np.ndarray,
                         n_folds: int = 10, far_target: float = 1e-3) -> dict:
    """insightface's verification numbers for pairs (embeddings1[i], embeddings2[i]).

    Embeddings must already be final (L2-normalised, or flip-summed with `flip_sum`). Returns scalars
    (`accuracy_mean/std`, `val_mean/std`, `far_mean`, `eer`, `eer_threshold` = the squared distance
    accepted as genuine at the EER point, `dist <= eer_threshold`) and arrays
    (`accuracy_per_fold`, `best_threshold_per_fold`, `best_threshold_index_per_fold`,
    `tpr/fpr_mean_over_folds`, `val/far/val_threshold_per_fold`, `squared_l2_distances`).
    """
    e1 = np.asarray(embeddings1, dtype=np.float64)
    e2 = np.asarray(embeddings2, dtype=np.float64)
    issame = np.asarray(issame).astype(bool).ravel()
    if e1.shape != e2.shape or e1.ndim != 2 or e1.shape[0] != issame.size:
        raise ValueError(f"embedding shapes {e1.shape} / {e2.shape} do not match {issame.size} pair labels")
    dist = np.sum(np.square(e1 - e2), axis=1)
    folds = contiguous_folds(issame.size, n_folds)
    for k, (train, test) in enumerate(folds):
        for split, rows in (("train", train), ("test", test)):
            if not issame[rows].any() or issame[rows].all():
                raise ValueError(f"fold {k} {split} split needs genuine and impostor pairs for VAL/FAR")

    accuracy, best_index, tprs, fprs = [], [], [], []
    val, far, val_threshold = [], [], []
    for train, test in folds:
        best = int(np.argmax(_rates(dist[train], issame[train], ACCURACY_THRESHOLDS)["accuracy"]))
        test_rates = _rates(dist[test], issame[test], ACCURACY_THRESHOLDS)
        best_index.append(best)
        accuracy.append(test_rates["accuracy"][best])
        tprs.append(test_rates["tpr"])
        fprs.append(test_rates["fpr"])

        far_train = _rates(dist[train], issame[train], VAL_THRESHOLDS)["fpr"]
        threshold = _far_threshold(far_train, VAL_THRESHOLDS, far_target)
        at_threshold = _rates(dist[test], issame[test], np.array([threshold]))
        val_threshold.append(threshold)
        val.append(at_threshold["tpr"][0])
        far.append(at_threshold["fpr"][0])

    accuracy, val = np.array(accuracy), np.array(val)
    eer = eer_stats(-dist[issame], -dist[~issame])
    return {
        "accuracy_mean": float(np.mean(accuracy)), "accuracy_std": float(np.std(accuracy)),
        "accuracy_per_fold": accuracy,
        "best_threshold_index_per_fold": np.array(best_index),
        "best_threshold_per_fold": ACCURACY_THRESHOLDS[best_index],
        "tpr_mean_over_folds": np.mean(tprs, axis=0), "fpr_mean_over_folds": np.mean(fprs, axis=0),
        "val_mean": float(np.mean(val)), "val_std": float(np.std(val)), "far_mean": float(np.mean(far)),
        "val_per_fold": val, "far_per_fold": np.array(far), "val_threshold_per_fold": np.array(val_threshold),
        "eer": float(eer["eer"]), "eer_threshold": float(-eer["eer_th"]),
        "squared_l2_distances": dist,
    }
