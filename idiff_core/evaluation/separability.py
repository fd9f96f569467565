"""Identity separability of a face set: genuine/impostor score statistics with pyeer's semantics.

IDiff-Face reports EER, FMR100, FMR1000, AUC, the score moments, d' and FDR of a synthetic set as
computed by pyeer 0.5.6 `get_eer_stats`. `eer_stats` re-implements those semantics (our code, no
pyeer dependency) so our numbers are comparable with the paper's, including pyeer's quirks:

* thresholds are the sorted unique scores; FMR(t) = share of impostor scores >= t, FNMR(t) = share
  of genuine scores < t (no threshold above the highest score is added);
* EER: t2 = first index with FMR - FNMR <= 0, t1 = t2 - 1 unless that difference is exactly 0 or
  t2 = 0; of t1, t2 the one with the smaller FMR + FNMR (t1 on ties); EER = (FMR + FNMR) / 2 there
  (curves that never cross: a RuntimeWarning and EER = 1, as pyeer);
* FMR<op> = FNMR at the first index minimising |FMR - op|; ZeroFMR = FNMR at the first index
  minimising FMR; ZeroFNMR = FMR at the LAST index minimising FNMR;
* the ROC curve is computed in float64, but the score moments (and d') are NumPy reductions in the
  scores' own dtype: pyeer receives float32 cosine scores, so gmean/gstd/imean/istd/d' are float32.
"""

from __future__ import annotations

import warnings

import numpy as np

from idiff_core.runtime import derive_seed
from idiff_core.vectors import l2_normalize

FMR_OPERATING_POINTS = {"fmr10": 0.1, "fmr20": 0.05, "fmr100": 0.01, "fmr1000": 0.001}


def roc_counts(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, false matches, false non-matches) at every unique score, in float64.

    False matches at t = impostor scores >= t; false non-matches = genuine scores < t.
    """
    genuine = np.sort(np.asarray(genuine, dtype=np.float64).ravel())
    impostor = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError(f"need genuine and impostor scores, got {genuine.size} genuine and {impostor.size} impostor")
    if not (np.isfinite(genuine).all() and np.isfinite(impostor).all()):
        raise ValueError("scores contain NaN or infinity")
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    false_non_matches = np.searchsorted(genuine, thresholds, side="left").astype(np.float64)
    false_matches = (impostor.size - np.searchsorted(impostor, thresholds, side="left")).astype(np.float64)
    return thresholds, false_matches, false_non_matches


def _eer_point(fmr: np.ndarray, fnmr: np.ndarray) -> tuple[int, float, float]:
    """pyeer's EER point (index, eer_low, eer_high): the better index around the first FMR <= FNMR."""
    diff = fmr - fnmr
    crossing = np.flatnonzero(diff <= 0)
    if crossing.size == 0:  # pyeer warns and reports the worst EER
        warnings.warn("FMR and FNMR curves do not cross (dissimilarity scores instead of similarities?); "
                      "EER set to 1 as pyeer does", RuntimeWarning, stacklevel=3)
        return 0, 1.0, 1.0
    t2 = int(crossing[0])
    t1 = t2 - 1 if diff[t2] != 0 and t2 != 0 else t2
    if fmr[t1] + fnmr[t1] <= fmr[t2] + fnmr[t2]:
        return t1, fnmr[t1], fmr[t1]
    return t2, fmr[t2], fnmr[t2]


def eer_stats(genuine: np.ndarray, impostor: np.ndarray) -> dict:
    """pyeer 0.5.6 `get_eer_stats` for similarity scores, plus FDR; curves under `thresholds/fmr/fnmr`.

    Pass the scores in the dtype the moments should be computed in (float32 cosine scores for parity
    with the paper's pipeline); the ROC-based values are float64 regardless.
    """
    genuine = np.asarray(genuine).ravel()
    impostor = np.asarray(impostor).ravel()
    thresholds, fm, fnm = roc_counts(genuine, impostor)
    fmr = fm / impostor.size
    fnmr = fnm / genuine.size

    stats: dict = {}
    eer_index, low, high = _eer_point(fmr, fnmr)
    stats.update(eer=(low + high) / 2, eer_low=low, eer_high=high,
                 eer_th=thresholds[eer_index])

    for name, op in {"fmr0": 0.0, **FMR_OPERATING_POINTS}.items():
        index = int(np.argmin(np.abs(fmr - op)))
        stats[name], stats[f"{name}_th"] = fnmr[index], thresholds[index]
    index = int(np.flatnonzero(fnmr == fnmr.min())[-1])
    stats["fnmr0"], stats["fnmr0_th"] = fmr[index], thresholds[index]

    tpr = 1 - fnmr
    stats["auc"] = ((fmr[:-1] - fmr[1:]) * (tpr[:-1] + (tpr[1:] - tpr[:-1]) / 2)).sum()

    youden = 1 - fnmr - fmr
    index = int(np.argmax(youden))
    stats["j_index"], stats["j_index_th"] = youden[index], thresholds[index]
    stats["mccoef"], stats["mccoef_th"] = _best_matthews(fm, fnm, genuine.size, impostor.size, thresholds)

    gmean, gstd = np.mean(genuine), np.std(genuine)
    imean, istd = np.mean(impostor), np.std(impostor)
    if gstd == 0 and istd == 0:
        decidability = 1  # pyeer's convention for two point masses
    else:
        decidability = abs(gmean - imean) / np.sqrt(0.5 * (gstd ** 2 + istd ** 2))
    stats.update(gmean=gmean, gstd=gstd, imean=imean, istd=istd, decidability=decidability)
    spread = float(gstd) ** 2 + float(istd) ** 2
    stats["FDR"] = (float(gmean) - float(imean)) ** 2 / spread if spread > 0 else float("inf")
    stats.update(thresholds=thresholds, fmr=fmr, fnmr=fnmr)
    return stats


def _best_matthews(fm: np.ndarray, fnm: np.ndarray, n_genuine: int, n_impostor: int,
                   thresholds: np.ndarray) -> tuple[float, float]:
    """Highest Matthews correlation over thresholds (pyeer: zero denominators count as 1)."""
    tn = n_impostor - fm
    tp = n_genuine - fnm
    denominator = np.sqrt(tp + fm) * np.sqrt(tp + fnm) * (np.sqrt(tn + fm) * np.sqrt(tn + fnm))
    denominator[denominator == 0] = 1
    mcc = (tp * tn - fm * fnm) / denominator
    index = int(np.argmax(mcc))
    return mcc[index], thresholds[index]


def _rows_per_identity(codes: np.ndarray) -> list[np.ndarray]:
    """Row indices of each identity code, ascending, identities in code order."""
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def identity_pairs(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All within-identity pairs, and as many distinct random cross-identity pairs (seeded).

    Returns two (K, 2) int64 arrays of row indices with i < j. When fewer cross-identity pairs exist
    than genuine ones, all of them are returned.
    """
    labels = np.asarray(labels).ravel()
    codes = np.unique(labels, return_inverse=True)[1].ravel()
    genuine = [rows[np.stack(np.triu_indices(rows.size, 1), 1)] for rows in _rows_per_identity(codes)]
    genuine = np.concatenate(genuine).astype(np.int64) if genuine else np.zeros((0, 2), np.int64)

    n = labels.size
    n_cross = n * (n - 1) // 2 - len(genuine)
    wanted = len(genuine)
    if wanted >= n_cross:
        i, j = np.triu_indices(n, 1)
        cross = codes[i] != codes[j]
        return genuine, np.stack([i[cross], j[cross]], 1).astype(np.int64)

    rng = np.random.default_rng(derive_seed(seed, "impostor_pairs"))
    keys = np.zeros(0, dtype=np.int64)
    while keys.size < wanted:
        draw = max(2 * (wanted - keys.size), 1024)
        i, j = rng.integers(0, n, draw), rng.integers(0, n, draw)
        keep = codes[i] != codes[j]
        lo, hi = np.minimum(i, j)[keep], np.maximum(i, j)[keep]
        keys = np.concatenate([keys, lo.astype(np.int64) * n + hi])
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # drop repeats, keep the order of first draw
    keys = keys[:wanted]
    return genuine, np.stack([keys // n, keys % n], 1)


def pair_cosine(embeddings: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """float32 cosine similarity of each (i, j) row pair, computed in chunks to bound memory."""
    unit = l2_normalize(embeddings, np.float32)
    scores = np.empty(len(pairs), dtype=np.float32)
    for start in range(0, len(pairs), chunk):
        block = pairs[start:start + chunk]
        scores[start:start + chunk] = np.einsum("ij,ij->i", unit[block[:, 0]], unit[block[:, 1]])
    return scores


def separability_report(embeddings: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """Separability of a labelled embedding set: pyeer statistics of genuine vs impostor cosines.

    Returns the scalar statistics (plain floats) plus `n_identities`, `n_genuine`, `n_impostor`, and
    the float32 score arrays under `genuine_scores` / `impostor_scores` (for histograms).
    """
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels).ravel()
    if embeddings.ndim != 2 or embeddings.shape[0] != labels.size:
        raise ValueError(f"embeddings {embeddings.shape} do not match {labels.size} labels")
    if np.unique(labels).size < 2:
        raise ValueError("separability needs at least two identities")
    genuine_pairs, impostor_pairs = identity_pairs(labels, seed)
    if len(genuine_pairs) == 0:
        raise ValueError("no identity has two or more images: genuine pairs cannot be formed")
    genuine = pair_cosine(embeddings, genuine_pairs)
    impostor = pair_cosine(embeddings, impostor_pairs)
    stats = eer_stats(genuine, impostor)
    report = {k: float(v) for k, v in stats.items() if np.ndim(v) == 0}
    report.update(n_identities=int(np.unique(labels).size), n_genuine=int(genuine.size),
                  n_impostor=int(impostor.size), genuine_scores=genuine, impostor_scores=impostor)
    return report
