"""Rule lfw_contexts: the paper's LFW-context experiment for one conditional generator."""
from idiff_core.evaluation.lfw_contexts import LfwContextSettings, lfw_context_experiment
from idiff_core.models.vq import VQConfig
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    lfw_context_experiment(
        smk.input.embeddings, smk.input.images, smk.input.pairs, smk.input.generator, settings["unet"],
        smk.input.decoder, settings_from_dict(VQConfig, settings["autoencoder"], "autoencoder.model"),
        smk.input.backbone, settings["image_size"], smk.wildcards.generator,
        settings_from_dict(LfwContextSettings, settings["lfw_contexts"], "evaluation.lfw_contexts"),
        smk.output.table, smk.output.scores, smk.output.histogram, smk.output.grid, device)


run_job(snakemake, stage)
