"""Rule eval_lfw: one model's verification row on the LFW(-like) pairs."""
from idiff_core.evaluation.lfw import VerificationSettings, evaluate_lfw
from idiff_core.models.iresnet import BackboneSpec
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    evaluate_lfw(smk.input.backbone, settings_from_dict(BackboneSpec, settings["model"], "model"),
                 smk.input.images, smk.input.pairs, settings["row"], smk.output.row, smk.output.scores,
                 settings_from_dict(VerificationSettings, settings["verification"], "evaluation.verification"),
                 device)


run_job(snakemake, stage)
