"""Rule fetch_ffhq: FFHQ's 128x128 faces from a local folder/archive or its published metadata."""
import shutil

from idiff_core.data.ffhq import FFHQSettings, prepare_ffhq
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    manifest = prepare_ffhq(settings_from_dict(FFHQSettings, settings["ffhq"], "data.ffhq"), smk.output.images,
                            threads=smk.threads, download_dir=smk.params.state)
    shutil.copyfile(manifest, smk.output.manifest)


run_job(snakemake, stage)
