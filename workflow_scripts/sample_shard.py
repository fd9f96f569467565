"""Rule sample_shard: images for one shard of a synthetic dataset's identities."""
from idiff_core.generation import GeneratorSpec
from idiff_core.sampling import SamplingSettings, sample_shard
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    sample_shard(GeneratorSpec.from_settings(smk.input.generator, smk.input.decoder, settings["generator"]),
                 smk.input.contexts, smk.output.images, smk.output.manifest, smk.params.state,
                 settings_from_dict(SamplingSettings, settings["sampling"], "sampling"),
                 shard=int(smk.wildcards.shard), device=device)


run_job(snakemake, stage)
