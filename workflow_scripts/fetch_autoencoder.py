"""Rule fetch_autoencoder: LDM's ffhq.zip (resumable, safe extraction) -> its model.ckpt."""
from idiff_core.data.ldm import LDMSettings, fetch_ldm_first_stage
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: fetch_ldm_first_stage(
    settings_from_dict(LDMSettings, settings["ldm"], "autoencoder.ldm"), smk.output.checkpoint,
    download_dir=smk.params.state))
