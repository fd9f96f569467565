"""Rule fetch_lfw: LFW's images and pairs.txt, checksummed (or from a local folder)."""
from pathlib import Path

from idiff_core.data.lfw import LFWSettings, prepare_lfw
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: prepare_lfw(
    settings_from_dict(LFWSettings, settings["lfw"], "data.lfw"), Path(smk.output.pairs).parent,
    download_dir=smk.params.state))
