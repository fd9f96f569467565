"""Rule split_autoencoder: Lightning checkpoint -> encoder and decoder state-dict files."""
from idiff_core.autoencoder import split_checkpoint
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: split_checkpoint(
    smk.input.checkpoint, smk.output.encoder, smk.output.decoder))
