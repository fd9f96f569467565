"""Rule report_grids: raw-sample and aligned-face grids of one synthetic dataset."""
from idiff_core.evaluation.figures import identity_grid
from idiff_core.workflow import run_job


def stage(smk, settings, device):
    report = settings["report"]
    for roots, out in ((smk.input.samples, smk.output.samples), (smk.input.aligned, smk.output.aligned)):
        identity_grid(roots, out, report["grid_identities"], report["grid_images"])


run_job(snakemake, stage)
