"""Rule import_embedder: the user's ElasticFace weights, checked by key and shape, copied into results/."""
from idiff_core.embeddings import import_backbone
from idiff_core.models.iresnet import BackboneSpec
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: import_backbone(
    settings["weights"], smk.output.backbone, settings_from_dict(BackboneSpec, settings["model"], "embedder.model")))
