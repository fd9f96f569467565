"""Figures of the evaluation: score distributions (genuine vs impostor, or any named sets) and ROC
curves. Rendered with matplotlib's Agg backend (no display), written atomically; the format follows
the file suffix (.png, .pdf, .svg)."""

from __future__ import annotations

import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from idiff_core.io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: str | os.PathLike) -> None:
    """Write `fig` to `path` atomically (format from the suffix) and free it."""
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=150, bbox_inches="tight")
    finally:
        plt.close(fig)


def score_histogram(scores: Mapping[str, np.ndarray], path: str | os.PathLike, title: str,
                    bins: int = 100, xlabel: str = "cosine similarity") -> None:
    """Overlaid density histograms of named score sets on shared bins.

    E.g. {"genuine": g, "impostor": i} for separability, or {"real-real": ..., "real-variation": ...,
    "variation-variation": ...} for the LFW-context experiment.
    """
    sets = {name: np.asarray(values, dtype=np.float64).ravel() for name, values in scores.items()}
    if not sets or any(v.size == 0 for v in sets.values()):
        raise ValueError(f"score_histogram needs non-empty score sets, got sizes "
                         f"{ {k: v.size for k, v in sets.items()} }")
    edges = np.histogram_bin_edges(np.concatenate(list(sets.values())), bins=bins)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in sets.items():
        ax.hist(values, bins=edges, density=True, alpha=0.5, label=f"{name} (n={values.size})")
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.legend()
    _save(fig, path)


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
