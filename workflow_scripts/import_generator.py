"""Rule import_generator: a published IDiff-Face EMA checkpoint, checked against the configured UNet."""
from idiff_core.generation import import_generator
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: import_generator(
    settings["checkpoint"], settings["unet"], smk.output.ema))
