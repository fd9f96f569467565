"""Rule assemble_dataset: exactly W identities x D aligned images, ImageFolder layout."""
from idiff_core.assembly import assemble_dataset
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: assemble_dataset(
    list(smk.input.images), list(smk.input.manifests), smk.output.images, smk.output.manifest,
    smk.output.summary, settings["identities"], settings["images_per_identity"]))
