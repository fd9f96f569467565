"""Result tables as CSV: atomic writes, the paper-style pivot and the replicate summary.

Parallel jobs each write their own one-row CSV and one job concatenates them (rules `lfw_table`,
`quality_table`): appending to a shared file from concurrent jobs would race.
"""

from __future__ import annotations

import os
from typing import Sequence

import pandas as pd

from idiff_core.io import atomic_path


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table as CSV atomically (full float precision, no index)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.17g")


def benchmark_table(results: pd.DataFrame, value: str = "accuracy_mean", index: str = "model",
                    columns: str = "benchmark", order: Sequence[str] | None = None,
                    scale: float = 100.0) -> pd.DataFrame:
    """Paper-style table: one row per `index`, one column per benchmark (in `order`), plus `mean`.

    Values are multiplied by `scale` (accuracy as %), averaged over an index's replicates; `mean` is
    over the benchmarks present in a row.
    """
    table = results.pivot_table(index=index, columns=columns, values=value, aggfunc="mean") * scale
    if order is not None:
        table = table.reindex(columns=[c for c in order if c in table.columns])
    table["mean"] = table.mean(axis=1)
    table.columns.name = None
    return table.reset_index()


def write_benchmark_tables(row_csvs: Sequence[str | os.PathLike], long_csv: str | os.PathLike,
                           paper_csv: str | os.PathLike) -> pd.DataFrame:
    """The per-(experiment, benchmark) result rows as one long table (every metric), and paper-style:
    accuracy % per experiment x benchmark (benchmarks in first-seen order) with their mean."""
    rows = pd.concat([pd.read_csv(p) for p in row_csvs], ignore_index=True)
    write_table(rows, long_csv)
    paper = benchmark_table(rows, index="experiment", order=list(dict.fromkeys(rows["benchmark"])))
    write_table(paper.set_index("experiment").loc[list(dict.fromkeys(rows["experiment"]))].reset_index(), paper_csv)
    return paper


SUMMARY_METRICS = ("accuracy_mean", "val_mean", "eer")


def replicate_summary(rows: pd.DataFrame, metrics: Sequence[str] = SUMMARY_METRICS) -> pd.DataFrame:
    """One row per experiment (first-seen order) over its replicates' rows: how many, and each metric's
    mean, sample standard deviation (empty for one replicate), minimum, maximum and the values
    themselves in replicate order. A training-dependent figure is only a result as mean +- sd."""
    summary = []
    for experiment, group in rows.sort_values("replicate", kind="stable").groupby("experiment", sort=False):
        row: dict = {"experiment": experiment, "replicates": len(group)}
        for metric in metrics:
            values = group[metric].astype(float)
            row.update({metric: values.mean(), f"{metric}_sd": values.std(ddof=1) if len(values) > 1 else None,
                        f"{metric}_min": values.min(), f"{metric}_max": values.max(),
                        f"{metric}_values": " ".join(f"{v:.4f}" for v in values)})
        summary.append(row)
    order = list(dict.fromkeys(rows["experiment"]))
    return pd.DataFrame(summary).set_index("experiment").loc[order].reset_index()
