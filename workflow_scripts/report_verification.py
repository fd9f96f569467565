"""Rule report_verification: distance histograms and ROC curves of every model on one benchmark."""
from idiff_core.evaluation.figures import verification_figures
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: verification_figures(
    dict(zip(smk.params.models, smk.input.scores)), dict(zip(smk.params.models, smk.output.histograms)),
    smk.output.roc, smk.wildcards.bench))
