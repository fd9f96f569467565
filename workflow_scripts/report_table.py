"""Rule report_table: one result table as rounded HTML for the report."""
from idiff_core.evaluation.figures import table_html
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: table_html(smk.input.table, smk.output.html))
