"""Rule sample_shard: images for one shard of a synthetic dataset's identities."""
from idiff_core.models.vq import VQConfig
from idiff_core.sampling import SamplingSettings, sample_shard
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    sampling = settings_from_dict(SamplingSettings, {
        "sampler": settings["sampling"]["sampler"], "shards": settings["sampling"]["shards"],
        "seed": settings["sampling"]["seed"], "images_per_identity": settings["images_per_identity"],
        "identities": settings["identities"]})
    sample_shard(smk.input.generator, settings["unet"], smk.input.decoder,
                 settings_from_dict(VQConfig, settings["autoencoder"], "autoencoder.model"), smk.input.contexts,
                 smk.output.images, smk.output.manifest, smk.params.state, sampling,
                 image_size=settings["image_size"], shard=int(smk.wildcards.shard), device=device)


run_job(snakemake, stage)
