"""Rule report_separability: genuine/impostor histograms and ROC curves of every synthetic dataset."""
from idiff_core.evaluation.figures import separability_figures
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: separability_figures(
    dict(zip(smk.params.datasets, smk.input.samples)), dict(zip(smk.params.datasets, smk.output.histograms)),
    smk.output.roc, settings["seed"]))
