"""Rules align_shard and align_real: MTCNN alignment of a folder onto the ArcFace template."""
from idiff_core.alignment import AlignSettings, align_folder
from idiff_core.settings import settings_from_dict
from idiff_core.training.fr import images_read
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    subset = settings.get("subset")  # {width, depth, val_identities} of the FR model this set feeds
    align_folder(smk.input.images, smk.output.images, smk.output.manifest,
                 settings_from_dict(AlignSettings, settings["alignment"], "alignment"), state_dir=smk.params.state,
                 threads=smk.threads, device=device, only=images_read(smk.input.images, **subset) if subset else None)


run_job(snakemake, stage)
