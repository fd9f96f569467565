"""Rule synthetic_quality: separability, identity consistency (sampled datasets) and leakage of one synthetic dataset."""
from idiff_core.evaluation.quality import QualitySettings, synthetic_quality
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    leakage, sampler = settings["leakage"], settings["sampler"] or {}  # a released dataset: no sampler
    synthetic_quality(smk.input.samples, smk.input.get("contexts"), smk.input.training, settings["dataset"],
                      smk.output.separability, smk.output.leakage, smk.output.identities,
                      QualitySettings(seed=settings["seed"], leakage_threshold=leakage["threshold"],
                                      leakage_per_identity=leakage["per_identity"],
                                      sampler=sampler.get("method"), sampling_steps=sampler.get("steps"),
                                      guidance_scale=sampler.get("guidance_scale")))


run_job(snakemake, stage)
