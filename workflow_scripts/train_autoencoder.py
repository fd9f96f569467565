"""Rule train_autoencoder: a small VQ-f4 autoencoder trained on the training faces."""
from idiff_core.autoencoder import AutoencoderTrainSettings, train_autoencoder
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: train_autoencoder(
    smk.input.images, smk.output.checkpoint, smk.output.losses, smk.params.state,
    settings_from_dict(AutoencoderTrainSettings, {**settings["train"], "model": settings["model"]},
                      "autoencoder.train"), threads=smk.threads, device=device))
