"""Rules extract_embeddings and embed_samples: one embedding per image, in one .npz."""
import os

from idiff_core.embeddings import EmbeddingSettings, extract_embeddings
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    folders = smk.input.get("shards") or [smk.input.images]
    root = os.path.commonpath([str(f) for f in folders]) if len(folders) > 1 else folders[0]
    extract_embeddings(root, smk.input.backbone, smk.output.embeddings, smk.output.manifest,
                       settings_from_dict(EmbeddingSettings, {**settings["model"], **settings["extract"]},
                                          "embedder"), threads=smk.threads, device=device)


run_job(snakemake, stage)
