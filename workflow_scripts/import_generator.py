"""Rule import_generator: a published IDiff-Face generator, checked against the configured one."""
from idiff_core.diffusion.schedule import DiffusionSettings
from idiff_core.generation import import_generator
from idiff_core.models.unet import UNetConfig
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    release = settings["release"]
    form = import_generator(release["source"], settings_from_dict(UNetConfig, settings["unet"], "generator unet"),
                            settings_from_dict(DiffusionSettings, settings["diffusion"], "ldm.diffusion"),
                            settings["image_size"], smk.output.ema, weights=release["weights"], step=release["step"])
    print(f"[import_generator] {release['source']}: {form}")


run_job(snakemake, stage)
