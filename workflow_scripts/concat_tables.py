"""Rules lfw_table and quality_table: one CSV from the per-job result rows, in input order."""
import pandas as pd

from idiff_core.evaluation.tables import write_table
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: write_table(
    pd.concat([pd.read_csv(p) for p in smk.input.rows], ignore_index=True), smk.output.table))
