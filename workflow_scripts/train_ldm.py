"""Rule train_ldm: one identity-conditioned (or unconditional) latent diffusion model."""
from idiff_core.training.ldm import ldm_settings, train_ldm
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: train_ldm(
    smk.input.images, smk.input.get("embeddings"), smk.input.encoder, smk.input.decoder,
    smk.output.ema.rsplit("/", 1)[0], smk.params.state, ldm_settings(settings["ldm"]), threads=smk.threads, device=device))
