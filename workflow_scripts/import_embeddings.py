"""Rule import_embeddings: released embeddings of the training faces, in place of extracting them."""
from idiff_core.embeddings import import_embeddings
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: import_embeddings(
    smk.input.vectors, smk.input.images, smk.output.embeddings, smk.output.manifest, settings["dim"]))
