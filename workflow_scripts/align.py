"""Rules align_shard and align_real: MTCNN alignment of a folder onto the ArcFace template."""
from idiff_core.alignment import AlignSettings, align_folder
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: align_folder(
    smk.input.images, smk.output.images, smk.output.manifest,
    settings_from_dict(AlignSettings, settings["alignment"], "alignment"), state_dir=smk.params.state,
    threads=smk.threads, device=device))
