"""Rule eval_lfw: one model's verification row on the LFW(-like) pairs."""
from idiff_core.evaluation.lfw import BackboneSpec, VerificationSettings, evaluate_lfw
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    model = settings["model"]
    evaluate_lfw(smk.input.backbone,
                 BackboneSpec(arch=model["arch"], num_features=model["num_features"], base_width=model["base_width"]),
                 smk.input.images, smk.input.pairs, settings["row"], smk.output.row, smk.output.scores,
                 settings_from_dict(VerificationSettings, settings["evaluation"]["verification"],
                                    "evaluation.verification"), device)


run_job(snakemake, stage)
