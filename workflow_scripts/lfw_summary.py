"""Rule lfw_summary: mean, sd and range of every experiment's lfw.csv rows over its replicates."""
import pandas as pd

from idiff_core.evaluation.tables import replicate_summary, write_table
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: write_table(
    replicate_summary(pd.read_csv(smk.input.table)), smk.output.summary))
