"""Rule import_generator: a published IDiff-Face EMA checkpoint, checked against the configured UNet."""
from idiff_core.generation import import_generator
from idiff_core.models.unet import UNetConfig
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: import_generator(
    settings["checkpoint"], settings_from_dict(UNetConfig, settings["unet"], "generator unet"), smk.output.ema))
