"""Rules align_shard and align_real: MTCNN alignment of a folder onto the ArcFace template."""
from idiff_core.alignment import AlignSettings, align_folder
from idiff_core.evaluation.lfw import images_in_pairs
from idiff_core.settings import settings_from_dict
from idiff_core.training.fr import images_read
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    subset = settings.get("subset")  # {width, depth, val_identities} of the FR model this set feeds
    only = None
    if smk.input.get("pairs"):  # the benchmark: the images its pairs name
        only = images_in_pairs(smk.input.images, smk.input.pairs)
    elif subset:
        only = images_read(smk.input.images, **subset)
    align_folder(smk.input.images, smk.output.images, smk.output.manifest,
                 settings_from_dict(AlignSettings, settings["alignment"], "alignment"), state_dir=smk.params.state,
                 threads=smk.threads, device=device, only=only)


run_job(snakemake, stage)
