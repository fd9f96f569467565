# Shared helpers of the rules: config look-ups, canonical settings JSON, names of experiments.

import json
import re

from idiff_core import __version__
from idiff_core.config import canonical_json

ENV = "../envs/idiff.yaml"
WORLD = config["data"]["source"] == "world"
EXPERIMENTS = {e["name"]: e for e in config["experiments"]}
# Models evaluated on the LFW(-like) benchmark: every experiment, plus, on the embedded face world,
# an FR model trained on the world's real labelled faces and the stand-in embedder itself.
REFERENCE_MODELS = ["real_reference", "embedder"] if WORLD else []


def settings(**subtrees):
    """Canonical JSON of exactly the config a rule reads: reruns follow the values, not the YAML order."""
    return canonical_json(subtrees)


def expensive(**subtrees):
    """As `settings`, plus the package version, so a release with changed numerics reruns the rule."""
    return settings(idiff_core_version=__version__, **subtrees)


def names_regex(names):
    return "|".join(re.escape(n) for n in names) or "(?!)"


def shards(dataset):
    return range(config["sampling"]["shards"])


def generator_settings(name):
    """One generator's LDM config: the shared `ldm` section with the generator's own overrides."""
    gen = config["generators"][name]
    return {"unet": {**config["ldm"]["unet"], **gen["unet"]}, "diffusion": config["ldm"]["diffusion"],
            "training": {**config["ldm"]["training"], **gen["training"]}}


def image_size():
    """Side of the training faces (the autoencoder's input; latents are image_size / f)."""
    return config["data"]["world"]["image_size"] if WORLD else config["data"]["ffhq"]["image_size"]


def is_conditional(name):
    return generator_settings(name)["unet"]["is_context_conditional"]


wildcard_constraints:
    generator=names_regex(config["generators"]),
    contexts=names_regex(config["contexts"]),
    dataset=names_regex(config["datasets"]),
    experiment=names_regex(EXPERIMENTS),
    model=names_regex(list(EXPERIMENTS) + REFERENCE_MODELS),
    shard=r"\d+",
