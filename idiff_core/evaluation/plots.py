"""Figures of the evaluation and the report: score distributions (genuine vs impostor, or any named
sets), ROC curves and training curves. Rendered with matplotlib's Agg backend (no
display), written atomically; the format follows the file suffix (.png, .pdf, .svg)."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from idiff_core.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    """Write `fig` to `path` atomically (format from the suffix) and free it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight")
    finally:
        plt.close(fig)


def _score_sets(scores: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    sets = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in scores.items()}
    if not sets or any(v.size == 0 for v in sets.values()):
        raise ValueError(f"score histograms need non-empty score sets, got sizes "
                         f"{ {k: v.size for k, v in sets.items()} }")
    return sets


def score_histograms(panels: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike, title: str,
                     bins: int = 100, xlabel: str = "cosine similarity") -> None:
    """One panel of overlaid density histograms per entry, on bins shared by every panel.

    E.g. {"real-real": {"genuine": g, "impostor": i}, "real-variation": {...}, ...} for the
    LFW-context experiment, so the panels compare at a glance.
    """
    panels = {name: _score_sets(scores) for name, scores in panels.items()}
    if not panels:
        raise ValueError("score_histograms needs at least one panel")
    edges = np.histogram_bin_edges(np.concatenate([v for sets in panels.values() for v in sets.values()]), bins=bins)
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), sharex=True, squeeze=False,
                             layout="constrained")
    for ax, (name, sets) in zip(axes[0], panels.items()):
        for label, values in sets.items():
            ax.hist(values, bins=edges, density=True, alpha=0.5, label=f"{label} (n={values.size})")
        ax.set(title=name if len(panels) > 1 else title, xlabel=xlabel, ylabel="density")
        ax.legend()
    if len(panels) > 1:
        fig.suptitle(title)
    _save(fig, path)


def score_histogram(scores: Mapping[str, np.ndarray], path: str | os.PathLike, title: str,
                    bins: int = 100, xlabel: str = "cosine similarity") -> None:
    """Overlaid density histograms of named score sets on shared bins, e.g. {"genuine": g, "impostor": i}."""
    score_histograms({title: scores}, path, title, bins, xlabel)


def roc_curve_plot(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
                   title: str, log_fmr: bool = True) -> None:
    """ROC curves, one per name: (false match rate, true match rate) arrays of equal length.

    From `separability.eer_stats`: (fmr, 1 - fnmr); from `verification_metrics`:
    (fpr_mean_over_folds, tpr_mean_over_folds). A log FMR axis shows the low-FMR region that
    FMR100/FMR1000 summarise; zero FMR points are left out there.
    """
    if not curves:
        raise ValueError("roc_curve_plot needs at least one curve")
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fmr, tmr) in curves.items():
        fmr, tmr = np.asarray(fmr, dtype=np.float64), np.asarray(tmr, dtype=np.float64)
        if fmr.shape != tmr.shape:
            raise ValueError(f"curve {name!r}: {fmr.shape} false match rates vs {tmr.shape} true match rates")
        order = np.lexsort((tmr, fmr))  # a monotone staircase whatever the threshold order
        keep = fmr[order] > 0 if log_fmr else np.ones(order.size, bool)
        ax.plot(fmr[order][keep], tmr[order][keep], label=name)
    if log_fmr:
        ax.set_xscale("log")
    ax.set(title=title, xlabel="false match rate", ylabel="true match rate (1 - FNMR)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    _save(fig, path)


def training_curves(table: pd.DataFrame, x: str, path: str | os.PathLike, title: str,
                    log_y: Sequence[str] = ()) -> None:
    """Every numeric column of a training log against `x`, one panel each (columns in `log_y` on a log axis)."""
    if x not in table.columns:
        raise ValueError(f"training log has no {x!r} column; columns: {list(table.columns)}")
    columns = [c for c in table.columns if c != x and pd.api.types.is_numeric_dtype(table[c])
               and table[c].notna().any()]
    if not columns:
        raise ValueError(f"training log holds no numeric column besides {x!r}")
    ncols = min(4, len(columns))
    nrows = -(-len(columns) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.5 * ncols, 2.8 * nrows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(columns):]:
        ax.set_visible(False)
    for ax, column in zip(axes.flat, columns):
        ax.plot(table[x], table[column], marker="." if len(table) < 50 else None)
        ax.set(title=column, xlabel=x)
        if column in log_y and (table[column] > 0).all():
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    fig.suptitle(title)
    _save(fig, path)
