"""Rules render_world and render_world_lfw: one of the face world's three disjoint-identity sets."""
from idiff_core.settings import settings_from_dict
from idiff_core.workflow import run_job
from idiff_core.world import WorldSettings, render_set, write_pairs


def stage(smk, settings, device):
    world = settings_from_dict(WorldSettings, settings["world"], "data.world")
    render_set(smk.output.images, settings["kind"], world, threads=smk.threads)
    if "pairs" in smk.output.keys():
        write_pairs(smk.output.images, smk.output.pairs, world.lfw_pairs_per_fold, world.seed)


run_job(snakemake, stage)
