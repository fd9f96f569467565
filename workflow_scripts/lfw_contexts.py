"""Rule lfw_contexts: the paper's LFW-context experiment for one conditional generator."""
from pathlib import Path

from idiff_core.evaluation.lfw_contexts import LfwContextOutputs, LfwContextSettings, LfwFiles, lfw_context_experiment
from idiff_core.generation import GeneratorSpec
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    lfw_context_experiment(
        LfwFiles(Path(smk.input.embeddings), Path(smk.input.images), Path(smk.input.pairs)),
        GeneratorSpec.from_settings(smk.input.generator, smk.input.decoder, settings["generator"]),
        smk.input.backbone, smk.wildcards.generator,
        settings_from_dict(LfwContextSettings, settings["lfw_contexts"], "evaluation.lfw_contexts"),
        LfwContextOutputs(*(Path(smk.output[name]) for name in ("table", "scores", "histogram", "grid"))), device)


run_job(snakemake, stage)
