"""Rule make_contexts: one identity-context set (synthetic_uniform, two_stage or real)."""
from idiff_core.contexts import (ContextSettings, real_contexts, two_stage_contexts, uniform_contexts,
                                 write_contexts)
from idiff_core.embeddings import EmbeddingSettings
from idiff_core.generation import SamplerSettings
from idiff_core.models.vq import VQConfig
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    spec = settings["contexts"]
    ctx = ContextSettings(kind=spec["kind"], count=spec["count"], seed=spec["seed"], dim=spec["dim"])
    names = None
    if ctx.kind == "synthetic_uniform":
        matrix, source = uniform_contexts(ctx.count, ctx.dim, ctx.seed), "N(0, I), L2-normalised"
    elif ctx.kind == "real":
        names, matrix = real_contexts(smk.input.embeddings, ctx.count, ctx.seed)
        source = f"real embeddings {smk.input.embeddings}"
    else:
        embedder = settings_from_dict(EmbeddingSettings, {**settings["embedder"], "batch_size": 64,
                                                          "flip_sum": False}, "embedder.model")
        matrix = two_stage_contexts(
            smk.input.generator, settings["generator"], smk.input.decoder,
            settings_from_dict(VQConfig, settings["autoencoder"], "autoencoder.model"), smk.input.backbone,
            embedder, settings_from_dict(SamplerSettings, settings["sampler"], "sampling.sampler"),
            ctx.count, ctx.seed, settings["image_size"], device)
        source = f"two-stage: {smk.input.generator} embedded by {smk.input.backbone}"
    write_contexts(smk.output.contexts, matrix, ctx, source, names)


run_job(snakemake, stage)
