"""Rule report_curves: one training-curve figure per training log."""
from idiff_core.evaluation.figures import curve_figures
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: curve_figures(
    dict(zip(smk.params.names, smk.input.logs)), dict(zip(smk.params.names, smk.output.figures))))
