"""Rules train_fr and train_embedder: iresnet + margin head on an ImageFolder of faces."""
from idiff_core.settings import settings_from_dict
from idiff_core.training.fr import FRTrainingSettings, train_fr
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: train_fr(
    smk.input.images, smk.output.backbone, smk.output.metrics, smk.params.state,
    settings_from_dict(FRTrainingSettings, settings["fr"], "fr.train"), threads=smk.threads, device=device))
