"""Rule train_ldm: one identity-conditioned (or unconditional) latent diffusion model, data-parallel
over all the GPUs the job was given (`resources: gpu=N`: the global batch is split N ways)."""
from pathlib import Path

from idiff_core.distributed import launch, local_processes
from idiff_core.training.ldm import LdmOutputs, ldm_settings, train_ldm
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    processes = local_processes(device, smk.resources.get("gpu", 1))
    outputs = LdmOutputs(*(Path(smk.output[name]) for name in ("ema", "model", "losses", "previews", "kept")))
    launch(train_ldm,
           (smk.input.images, smk.input.get("embeddings"), smk.input.latents, smk.input.decoder,
            outputs, smk.params.state, ldm_settings(settings["ldm"])),
           processes, kwargs=dict(threads=max(1, smk.threads // processes), device=device),
           log_path=smk.log[0] if len(smk.log) else None)


if __name__ == "__main__":  # the training processes import this file again; only the job runs it
    run_job(snakemake, stage)  # noqa: F821  (defined by Snakemake)
