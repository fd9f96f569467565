"""Rules train_fr and train_embedder: iresnet + margin head on an ImageFolder of faces, data-parallel
over all the GPUs the job was given (`resources: gpu=N`: N processes of `batch_size` images each)."""
from idiff_core.distributed import launch, local_processes
from idiff_core.settings import settings_from_dict
from idiff_core.training.fr import FRTrainingSettings, train_fr
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    processes = local_processes(device, smk.resources.get("gpu", 1))
    launch(train_fr,
           (smk.input.images, smk.output.backbone, smk.output.metrics, smk.params.state,
            settings_from_dict(FRTrainingSettings, settings["fr"], "fr.train")),
           processes, kwargs=dict(threads=max(1, smk.threads // processes), device=device),
           log_path=smk.log[0] if len(smk.log) else None)


if __name__ == "__main__":  # the training processes import this file again; only the job runs it
    run_job(snakemake, stage)  # noqa: F821  (defined by Snakemake)
