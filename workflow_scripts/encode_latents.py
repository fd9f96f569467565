"""Rule encode_latents: the training faces' VQ latents (and their flips'), once for every generator."""
from idiff_core.models.vq import VQConfig
from idiff_core.settings import settings_from_dict
from idiff_core.training.latents import encode_latents
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    encode_latents(smk.input.images, smk.input.encoder, smk.output.latents,
                   settings_from_dict(VQConfig, settings["autoencoder"], "autoencoder.model"),
                   settings["encode_batch_size"], threads=smk.threads, device=device)


run_job(snakemake, stage)
