"""Verification of one face-recognition model on a benchmark: LFW-style (images + pairs.txt) or an
insightface `.bin`.

Produces one result row (the model's descriptive columns + accuracy, VAL@FAR, EER) and the pair
distances, which the report's histograms and ROC curves are drawn from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..data.benchmarks import lfw_image_path, read_bin, read_lfw_pairs
from ..embeddings import embed_images
from ..io import atomic_path, file_digests, read_rgb
from ..models.iresnet import BackboneSpec
from ..progress import progress
from .tables import write_table
from .verification import verification_metrics


# The descriptive columns of a result row, in the order the table shows them.
ROW_COLUMNS = ("experiment", "replicate", "generator", "condition", "cpd", "guidance", "contexts", "identities",
               "images_per_identity", "augmentation", "backbone")


@dataclass(frozen=True)
class VerificationSettings:
    n_folds: int
    far_target: float
    flip_sum: bool
    batch_size: int


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


def images_in_pairs(images_root: str | os.PathLike, pairs_txt: str | os.PathLike) -> list[Path]:
    """The images the pairs name, each once, as paths relative to `images_root`: all of the benchmark
    that `evaluate_lfw` reads (LFW: ~7,700 of 13,233 photos), so all that needs aligning."""
    return [Path(p).relative_to(images_root) for p in pair_images(images_root, pairs_txt)[0]]


def evaluate_pairs(backbone_path: str | os.PathLike, backbone: BackboneSpec, images: np.ndarray, first: np.ndarray,
                   second: np.ndarray, issame: np.ndarray, row: Mapping[str, Any], out_row_csv: str | os.PathLike,
                   out_scores_npz: str | os.PathLike, settings: VerificationSettings, device: str) -> dict:
    """Embed `images` (uint8 NHWC) once, run the insightface protocol on pairs (first[i], second[i]),
    write the row (descriptive columns + metrics + the backbone file's SHA-256) and the pair distances."""
    model = backbone.load(backbone_path)
    with progress(total=len(images), desc="embed", unit="img") as bar:
        embeddings = embed_images(model.to(device), images, settings.batch_size, device, settings.flip_sum, bar=bar)
    metrics = verification_metrics(embeddings[first], embeddings[second], issame, settings.n_folds,
                                   settings.far_target)
    ordered = {key: row[key] for key in ROW_COLUMNS if key in row}
    result = {**ordered, **row, **{k: float(metrics[k]) for k in ("accuracy_mean", "accuracy_std", "val_mean", "val_std",
                                                         "far_mean", "eer")}, "pairs": int(issame.size),
              "backbone_sha256": file_digests(backbone_path).sha256}
    write_table(pd.DataFrame([result]), out_row_csv)
    with atomic_path(out_scores_npz) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, squared_l2_distances=metrics["squared_l2_distances"], issame=issame)
    print(f"[verification] {row.get('experiment', '')} {row.get('benchmark', '')}: accuracy "
          f"{result['accuracy_mean']:.4f} +- {result['accuracy_std']:.4f} over {issame.size} pairs")
    return result


def evaluate_lfw(backbone_path: str | os.PathLike, backbone: BackboneSpec, images_root: str | os.PathLike,
                 pairs_txt: str | os.PathLike, row: Mapping[str, Any], out_row_csv: str | os.PathLike,
                 out_scores_npz: str | os.PathLike, settings: VerificationSettings, device: str) -> dict:
    """The LFW(-like) benchmark from an image folder + pairs.txt (every pair image read once)."""
    paths, first, second, issame = pair_images(images_root, pairs_txt)
    images = np.stack([read_rgb(p) for p in paths])
    return evaluate_pairs(backbone_path, backbone, images, first, second, issame, row, out_row_csv, out_scores_npz,
                          settings, device)


def evaluate_bin(backbone_path: str | os.PathLike, backbone: BackboneSpec, bin_path: str | os.PathLike,
                 row: Mapping[str, Any], out_row_csv: str | os.PathLike, out_scores_npz: str | os.PathLike,
                 settings: VerificationSettings, device: str) -> dict:
    """An insightface `.bin` benchmark (read with the restricted unpickler; pair i = images 2i, 2i + 1)."""
    images, issame = read_bin(bin_path)
    if issame.size == 0:
        raise ValueError(f"{bin_path}: the benchmark holds no pairs")
    pairs = np.arange(issame.size)
    return evaluate_pairs(backbone_path, backbone, images, 2 * pairs, 2 * pairs + 1, issame, row, out_row_csv,
                          out_scores_npz, settings, device)
