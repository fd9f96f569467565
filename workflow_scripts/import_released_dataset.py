"""Rule import_released_dataset: a published dataset's images as <identity>/<k>.png, with a manifest."""
from idiff_core.released_datasets import ReleasedDataset, import_released_dataset
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job

run_job(snakemake, lambda smk, settings, device: import_released_dataset(
    settings_from_dict(ReleasedDataset, settings["released"], "datasets.<name>.released"), smk.output.images,
    smk.output.manifest, threads=smk.threads))
