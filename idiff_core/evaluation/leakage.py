"""Identity leakage: how close each synthetic identity comes to a real training (FFHQ) face.

The paper plots, per synthetic identity, its highest cosine similarity to any training embedding.
Default (`per_identity="max"`): the maximum over ALL images of the identity and all training
embeddings, so one generated image that reproduces a training face is enough to flag the identity.
`per_identity="mean"` instead scores the identity's normalised mean embedding (its "centre").
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from idiff_core.vectors import l2_normalize
from idiff_core.runtime import resolve_device

PER_IDENTITY_MODES = ("max", "mean")


def nearest_neighbours(queries: np.ndarray, references: np.ndarray, device: str = "cpu",
                       max_block_bytes: int = 256 << 20) -> tuple[np.ndarray, np.ndarray]:
    """(highest cosine, index of that reference) for each query row, via float32 blocked matmul.

    Blocks of query rows keep the similarity block under `max_block_bytes` (500k x 70k never exists),
    and queries are normalised block by block (no float64 copy of all of them). `device` may be a
    CUDA device: the matmul is the whole cost (500k x 70k x 512 is ~30 min on 2 CPU cores).
    """
    target = resolve_device(device)
    refs = torch.from_numpy(l2_normalize(references, np.float32)).to(target).T.contiguous()
    rows = max(1, max_block_bytes // (4 * refs.shape[1]))
    best = np.empty(len(queries), dtype=np.float32)
    where = np.empty(len(queries), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(queries), rows):
            block = torch.from_numpy(l2_normalize(queries[start:start + rows], np.float32)).to(target)
            values, indices = (block @ refs).max(dim=1)
            best[start:start + rows] = values.cpu().numpy()
            where[start:start + rows] = indices.cpu().numpy()
    return best, where


def identity_leakage(synth_embeddings: np.ndarray, synth_labels: Sequence, train_embeddings: np.ndarray,
                     threshold: float, train_names: Sequence[str] | None = None,
                     per_identity: str = "max", device: str = "cpu") -> tuple[pd.DataFrame, dict]:
    """Per synthetic identity, its highest similarity to a training embedding; plus a summary.

    Returns a DataFrame (identity, max_similarity, nearest_train_name, n_images; sorted by identity)
    and a summary dict: mean, median, p95, max, count_above_threshold (similarity > threshold),
    fraction_above_threshold, threshold, n_identities, per_identity. Training rows are named by
    `train_names` (e.g. FFHQ file stems) or by their row number. `device`: where the matmul runs.
    """
    if per_identity not in PER_IDENTITY_MODES:
        raise ValueError(f"per_identity must be one of {PER_IDENTITY_MODES}, got {per_identity!r}")
    synth = np.asarray(synth_embeddings)
    train = np.asarray(train_embeddings)
    labels = np.asarray(synth_labels).ravel()
    if synth.ndim != 2 or train.ndim != 2 or synth.shape[1] != train.shape[1]:
        raise ValueError(f"embedding shapes do not match: synthetic {synth.shape}, training {train.shape}")
    if labels.size != synth.shape[0] or synth.shape[0] == 0 or train.shape[0] == 0:
        raise ValueError(f"need >= 1 synthetic and training embedding and one label per synthetic row "
                         f"(got {synth.shape[0]} rows, {labels.size} labels, {train.shape[0]} training rows)")
    names = np.asarray([str(n) for n in train_names] if train_names is not None
                       else [str(i) for i in range(train.shape[0])])
    if names.size != train.shape[0]:
        raise ValueError(f"{names.size} training names for {train.shape[0]} training embeddings")

    identities, codes = np.unique(labels, return_inverse=True)
    codes = codes.ravel()
    counts = np.bincount(codes, minlength=identities.size)
    if per_identity == "mean":
        centres = np.zeros((identities.size, synth.shape[1]))
        np.add.at(centres, codes, l2_normalize(synth, np.float32))
        similarity, nearest = nearest_neighbours(centres, train, device)
    else:
        image_best, image_nearest = nearest_neighbours(synth, train, device)
        order = np.lexsort((-image_best, codes))  # per identity, its best image first
        first = order[np.searchsorted(codes[order], np.arange(identities.size))]
        similarity, nearest = image_best[first], image_nearest[first]

    table = pd.DataFrame({"identity": identities, "max_similarity": similarity.astype(np.float64),
                          "nearest_train_name": names[nearest], "n_images": counts})
    above = int((similarity > threshold).sum())
    summary = {
        "mean": float(np.mean(similarity)), "median": float(np.median(similarity)),
        "p95": float(np.percentile(similarity, 95)), "max": float(np.max(similarity)),
        "count_above_threshold": above, "fraction_above_threshold": above / identities.size,
        "threshold": float(threshold), "n_identities": int(identities.size), "per_identity": per_identity,
    }
    return table, summary
