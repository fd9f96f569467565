"""Rule synthetic_quality: separability, identity consistency and leakage of one synthetic dataset."""
from idiff_core.evaluation.quality import QualitySettings, synthetic_quality
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    leakage, sampler = settings["leakage"], settings["sampler"]
    synthetic_quality(smk.input.samples, smk.input.contexts, smk.input.training, settings["dataset"],
                      smk.output.separability, smk.output.leakage, smk.output.identities,
                      QualitySettings(seed=settings["seed"], leakage_threshold=leakage["threshold"],
                                      leakage_per_identity=leakage["per_identity"],
                                      sampler=sampler["method"], sampling_steps=sampler["steps"],
                                      guidance_scale=sampler["guidance_scale"]))


run_job(snakemake, stage)
