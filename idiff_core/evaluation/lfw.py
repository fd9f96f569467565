"""Verification of one face-recognition model on an LFW-style benchmark (images + pairs.txt).

Produces one result row (the model's descriptive columns + accuracy, VAL@FAR, EER) and the pair
distances, which the report's histograms and ROC curves are drawn from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..embeddings import embed_images
from ..io import atomic_path, read_rgb
from ..models.iresnet import load_backbone
from .benchmarks import lfw_image_path, read_lfw_pairs
from .tables import write_table
from .verification import verification_metrics


# The descriptive columns of a result row, in the order the table shows them.
ROW_COLUMNS = ("experiment", "generator", "condition", "cpd", "contexts", "identities", "images_per_identity",
               "augmentation", "backbone")


@dataclass(frozen=True)
class VerificationSettings:
    n_folds: int
    far_target: float
    flip_sum: bool
    batch_size: int


@dataclass(frozen=True)
class BackboneSpec:
    """Which iresnet a backbone file holds (published or trained here)."""

    arch: str | list[int]
    num_features: int
    base_width: int


def pair_images(images_root: str | os.PathLike, pairs_txt: str | os.PathLike):
    """Unique image paths of the pairs, the row index of each side of each pair, and the labels."""
    pairs, _ = read_lfw_pairs(pairs_txt)
    index: dict[str, int] = {}
    paths, first, second = [], [], []
    for pair in pairs:
        for side, (name, idx) in ((first, (pair.name1, pair.idx1)), (second, (pair.name2, pair.idx2))):
            path = str(lfw_image_path(images_root, name, idx))
            if path not in index:
                index[path] = len(paths)
                paths.append(path)
            side.append(index[path])
    return paths, np.array(first), np.array(second), np.array([p.issame for p in pairs], dtype=bool)


def evaluate_lfw(backbone_path: str | os.PathLike, backbone: BackboneSpec, images_root: str | os.PathLike,
                 pairs_txt: str | os.PathLike, row: Mapping[str, Any], out_row_csv: str | os.PathLike,
                 out_scores_npz: str | os.PathLike, settings: VerificationSettings, device: str) -> dict:
    """Embed every pair image once, run the insightface 10-fold protocol, write the row and the scores."""
    paths, first, second, issame = pair_images(images_root, pairs_txt)
    model = load_backbone(backbone_path, backbone.arch, backbone.num_features, base_width=backbone.base_width)
    images = np.stack([read_rgb(p) for p in paths])
    embeddings = embed_images(model.to(device), images, settings.batch_size, device, settings.flip_sum)
    metrics = verification_metrics(embeddings[first], embeddings[second], issame, settings.n_folds,
                                   settings.far_target)
    ordered = {key: row[key] for key in ROW_COLUMNS if key in row}
    result = {**ordered, **row, **{k: float(metrics[k]) for k in ("accuracy_mean", "accuracy_std", "val_mean", "val_std",
                                                         "far_mean", "eer")}, "pairs": int(issame.size)}
    write_table(pd.DataFrame([result]), out_row_csv)
    with atomic_path(out_scores_npz) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, squared_l2_distances=metrics["squared_l2_distances"], issame=issame)
    print(f"[lfw] {row.get('experiment', '')}: accuracy {result['accuracy_mean']:.4f} "
          f"+- {result['accuracy_std']:.4f} over {issame.size} pairs")
    return result
