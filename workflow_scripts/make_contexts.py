"""Rule make_contexts: one identity-context set (synthetic_uniform, two_stage, real or file)."""
from pathlib import Path

from idiff_core.contexts import ContextSettings, TwoStageSource, make_contexts
from idiff_core.embeddings import EmbeddingSettings
from idiff_core.generation import GeneratorSpec, SamplerSettings
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    two_stage = None
    if "generator" in settings:
        two_stage = TwoStageSource(
            GeneratorSpec.from_settings(smk.input.generator, smk.input.decoder, settings["generator"]),
            Path(smk.input.backbone), settings_from_dict(EmbeddingSettings, settings["embedder"], "embedder"),
            settings_from_dict(SamplerSettings, settings["sampler"], "sampling.sampler"))
    make_contexts(settings_from_dict(ContextSettings, settings["contexts"], "contexts"), smk.output.contexts,
                  vectors=smk.input.get("vectors"), two_stage=two_stage, device=device)


run_job(snakemake, stage)
