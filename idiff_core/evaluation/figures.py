"""The report's figures and tables, drawn from files earlier stages wrote (nothing is re-trained).

Sample and aligned-face grids from the shard folders, training curves from the trainers' CSV logs,
verification histograms and ROC curves from the saved pair distances, separability histograms and
ROC curves from the synthetic samples' embeddings, and rounded HTML copies of the result tables.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_path, list_images, load_matrix, read_rgb, write_image_grid
from .plots import roc_curve_plot, score_histogram, training_curves
from .quality import sample_identities
from .separability import eer_stats, separability_report


def identity_grid(roots: Sequence[str | os.PathLike], out_png: str | os.PathLike, identities: int,
                  images: int) -> None:
    """A grid of the first `identities` identity folders (by name, over all shard roots), one row each,
    showing their first `images` images (by file name, numerically where the names are numbers)."""
    folders = sorted((p for root in roots for p in Path(root).iterdir() if p.is_dir()), key=lambda p: p.name)
    rows = []
    for folder in folders[:identities]:
        files = sorted(list_images(folder, recursive=False), key=lambda p: (not p.stem.isdigit(),
                                                                            int(p.stem) if p.stem.isdigit() else 0,
                                                                            p.name))
        rows.append([read_rgb(f) for f in files[:images]])
    if not any(rows):
        raise ValueError(f"no identity folder with images under {[str(r) for r in roots]}")
    write_image_grid(rows, out_png)


def curve_figures(logs: Mapping[str, str | os.PathLike], out_pngs: Mapping[str, str | os.PathLike]) -> None:
    """One figure per training log: every numeric column against `epoch` (FR logs) or `step` (AE, LDM)."""
    for name, log in logs.items():
        table = pd.read_csv(log)
        x = next((c for c in ("epoch", "step") if c in table.columns), None)
        if x is None:
            raise ValueError(f"{log}: a training log needs an 'epoch' or 'step' column, has {list(table.columns)}")
        training_curves(table, x, out_pngs[name], f"{name} ({Path(log).name})",
                        log_y=[c for c in table.columns if "loss" in c or c in ("l1", "mse")])


def _thin_curve(fmr: np.ndarray, tmr: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most about `points` ROC points, spread evenly on a log FMR axis (what the plot shows)."""
    order = np.lexsort((tmr, fmr))
    fmr, tmr = fmr[order], tmr[order]
    if fmr.size <= points:
        return fmr, tmr
    positive = fmr[fmr > 0]
    low = positive.min() if positive.size else 1e-9
    keep = np.searchsorted(fmr, np.logspace(np.log10(low), 0, points))
    keep = np.unique(np.concatenate([[0], np.clip(keep, 0, fmr.size - 1), [fmr.size - 1]]))
    return fmr[keep], tmr[keep]


def _roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stats = eer_stats(genuine, impostor)
    return _thin_curve(stats["fmr"], 1 - stats["fnmr"])


def verification_figures(scores: Mapping[str, str | os.PathLike], out_histograms: Mapping[str, str | os.PathLike],
                         out_roc: str | os.PathLike, benchmark: str) -> None:
    """Per model: genuine vs impostor squared L2 distances of the benchmark's pairs; all models' ROC."""
    curves = {}
    for model, npz in scores.items():
        with np.load(npz, allow_pickle=False) as data:
            dist, issame = data["squared_l2_distances"], data["issame"].astype(bool)
        score_histogram({"genuine": dist[issame], "impostor": dist[~issame]}, out_histograms[model],
                        f"{benchmark}: {model}", bins=50, xlabel="squared L2 distance")
        curves[model] = _roc(-dist[issame], -dist[~issame])
    roc_curve_plot(curves, out_roc, f"{benchmark}: ROC")


def separability_figures(samples: Mapping[str, str | os.PathLike], out_histograms: Mapping[str, str | os.PathLike],
                         out_roc: str | os.PathLike, seed: int) -> None:
    """Per synthetic dataset: genuine vs impostor cosine scores (the pairs of `separability_report`,
    so the same as in separability.csv); all datasets' ROC."""
    curves = {}
    for dataset, npz in samples.items():
        names, embeddings, _ = load_matrix(npz)
        report = separability_report(embeddings, sample_identities(names), seed)
        genuine, impostor = report["genuine_scores"], report["impostor_scores"]
        score_histogram({"genuine": genuine, "impostor": impostor}, out_histograms[dataset],
                        f"identity separability: {dataset}", bins=50)
        curves[dataset] = _roc(genuine, impostor)
    roc_curve_plot(curves, out_roc, "identity separability: ROC")


def table_html(csv: str | os.PathLike, out_html: str | os.PathLike, digits: int = 4) -> None:
    """A result table as an HTML table, floats rounded to `digits` significant digits."""
    table = pd.read_csv(csv)
    html = table.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.{digits}g}", border=0)
    with atomic_path(out_html) as tmp:
        tmp.write_text(f"<html><head><meta charset='utf-8'></head><body>{html}</body></html>\n")
