"""Rule benchmark_table: the .bin benchmark rows as one long table and one paper-style accuracy table."""
from idiff_core.evaluation.tables import write_benchmark_tables
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: write_benchmark_tables(smk.input.rows, smk.output.table,
                                                                          smk.output.paper))
