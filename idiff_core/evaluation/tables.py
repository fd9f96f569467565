"""Result tables as CSV: merge per-job result rows into one table, and pivot them paper-style.

Parallel jobs should each write their own CSV and one job merge them (`merge_csvs`): appending to a
shared file from concurrent jobs would race. Rows are identified by key columns; a later row with
the same key replaces an earlier one, so re-running an evaluation updates its row instead of
duplicating it.
"""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import pandas as pd

from idiff_core.io import atomic_path


def combine_rows(frames: Sequence[pd.DataFrame], key: Sequence[str]) -> pd.DataFrame:
    """Concatenate tables (union of columns, first-seen order); the last row per key wins; sorted by key."""
    key = list(key)
    frames = [f for f in frames if len(f.columns)]
    if not frames:
        return pd.DataFrame(columns=key)
    combined = pd.concat(frames, ignore_index=True, sort=False)
    missing = [k for k in key if k not in combined.columns]
    if missing:
        raise ValueError(f"result rows lack key column(s) {missing}; columns: {list(combined.columns)}")
    combined = combined.drop_duplicates(subset=key, keep="last")
    return combined.sort_values(key, kind="stable").reset_index(drop=True)


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table as CSV atomically (full float precision, no index)."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.17g")


def upsert_rows(path: str | os.PathLike, rows: Sequence[Mapping], key: Sequence[str]) -> pd.DataFrame:
    """Add `rows` to the CSV at `path` (created if absent), replacing rows with the same key."""
    existing = [pd.read_csv(path)] if os.path.exists(path) else []
    table = combine_rows(existing + [pd.DataFrame(list(rows))], key)
    write_table(table, path)
    return table


def merge_csvs(paths: Sequence[str | os.PathLike], out_path: str | os.PathLike, key: Sequence[str]) -> pd.DataFrame:
    """Merge result CSVs (in the given order: later files win on equal keys) into `out_path`."""
    table = combine_rows([pd.read_csv(p) for p in paths], key)
    write_table(table, out_path)
    return table


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
