"""Rule sample_appearance: detection rate and colour of one dataset's samples against the training faces."""
from idiff_core.evaluation.appearance import sample_appearance
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: sample_appearance(
    smk.input.samples, smk.input.training, smk.input.summary, settings["dataset"], settings["training_images"],
    settings["seed"], smk.output.table))
