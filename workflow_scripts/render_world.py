"""Rules render_world and render_world_lfw: one of the face world's three disjoint-identity sets."""
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job
from idiff_core.world import WorldSettings, render_set


def stage(smk, settings, device):
    render_set(smk.output.images, settings["kind"], settings_from_dict(WorldSettings, settings["world"], "data.world"),
               smk.output.landmarks, pairs_txt=smk.output.get("pairs"), threads=smk.threads)


run_job(snakemake, stage)
