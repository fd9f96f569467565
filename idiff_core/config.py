"""Validate the workflow config against its JSON schema, with messages that name the key.

The Snakefile calls `validate_config` before any rule is built, so a typo or a wrong type stops
the run at once instead of hours later inside a job.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import jsonschema
import yaml


class ConfigError(ValueError):
    """The config does not match the schema or refers to names it does not define."""


def _key_path(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"'{where}.{k}'" if error.absolute_path else f"'{k}'" for k in extra)
        return f"unknown config key {keys}; allowed here: {', '.join(allowed)}"
    if error.validator == "required":
        return f"config key '{where}' is missing {error.message.split(' is a required')[0]}"
    if error.validator == "type":
        return f"config key '{where}' must be of type {error.validator_value}, got {error.instance!r}"
    if error.validator == "enum":
        return f"config key '{where}' must be one of {error.validator_value}, got {error.instance!r}"
    return f"config key '{where}': {error.message}"


def load_schema(path: str | os.PathLike) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


def validate_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Raise ConfigError listing every schema violation and dangling cross-reference."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    if not problems:
        problems = _cross_reference_problems(config)
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


# ------------------------------------------------------------------ facts derived from the config

def image_size(config: Mapping[str, Any]) -> int:
    """Side of the training faces (the autoencoder's input; latents are image_size / f)."""
    data = config["data"]
    return data["world"]["image_size"] if data["source"] == "world" else data["ffhq"]["image_size"]


def generator_unet(config: Mapping[str, Any], generator: str) -> dict[str, Any]:
    """A generator's UNet: the shared `ldm.unet` with the generator's own overrides."""
    return {**config["ldm"]["unet"], **config["generators"][generator]["unet"]}


def generator_ldm(config: Mapping[str, Any], generator: str) -> dict[str, Any]:
    """A generator's LDM training config: the shared `ldm` section with the generator's overrides, its
    replicate added to the seed, less `encode_batch_size` (the faces are encoded once for every generator)."""
    gen = config["generators"][generator]
    training = {**config["ldm"]["training"], **gen["training"]}
    del training["encode_batch_size"]
    training["seed"] += replicate_of(gen)
    return {"unet": generator_unet(config, generator), "diffusion": config["ldm"]["diffusion"], "training": training}


def generator_model(config: Mapping[str, Any], generator: str) -> dict[str, Any]:
    """What builds a generator's networks (`generation.GeneratorSpec.from_settings`): UNet, autoencoder, image size."""
    return {"unet": generator_unet(config, generator), "autoencoder": config["autoencoder"]["model"],
            "image_size": image_size(config)}


def generator_release(config: Mapping[str, Any], generator: str) -> dict[str, Any]:
    """Where a published generator comes from (`generation.import_generator`): a released model folder
    or checkpoint file, and which of the folder's weights (`ema` unless set; `step`: an EMA copy kept then)."""
    gen = config["generators"][generator]
    return {"source": gen["pretrained"], "weights": gen.get("pretrained_weights", "ema"),
            "step": gen.get("pretrained_step")}


def is_released(dataset: Mapping[str, Any]) -> bool:
    """A dataset read from a published release (`released`) instead of sampled from a generator."""
    return dataset.get("released") is not None


def is_evaluation_only(experiment: Mapping[str, Any]) -> bool:
    """An experiment that evaluates given backbone weights (`weights`) instead of training on a dataset."""
    return "weights" in experiment


def embedding_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """How identity embeddings are extracted (`embeddings.EmbeddingSettings`): the embedder and `extract`."""
    return {**config["embedder"]["model"], **config["embedder"]["extract"]}


def load_config(path: str | os.PathLike, overrides: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """A config file with each override file merged over it key by key, as Snakemake's `--configfile` does."""
    def merge(base: dict, update: Mapping) -> dict:
        for key, value in update.items():
            if isinstance(value, Mapping) and isinstance(base.get(key), dict):
                merge(base[key], value)
            else:
                base[key] = copy.deepcopy(value)
        return base

    merged = load_yaml(path)
    for override in overrides:
        merge(merged, load_yaml(override))
    return merged


# ---------------------------------------------------------------------------------- cross references

def _cross_reference_problems(config: Mapping[str, Any]) -> list[str]:
    """Names used in one section must be defined in another (experiments -> datasets -> ...)."""
    problems = []
    generators, contexts, datasets = config["generators"], config["contexts"], config["datasets"]
    for name, ctx in contexts.items():
        if ctx["kind"] == "two_stage":
            gen = ctx.get("generator")
            if gen not in generators:
                problems.append(f"contexts.{name}.generator '{gen}' is not defined under 'generators'")
            elif generator_unet(config, gen)["is_context_conditional"]:
                problems.append(f"contexts.{name}.generator '{gen}' must be an unconditional generator")
    for name, gen in generators.items():
        if "encode_batch_size" in gen["training"]:
            problems.append(f"generators.{name}.training.encode_batch_size: the training faces are encoded once "
                            f"for every generator (rule encode_latents); set ldm.training.encode_batch_size")
    for name, ds in datasets.items():
        if is_released(ds):
            sampling_keys = sorted({"generator", "contexts", "oversample", "sampler"} & set(ds))
            if sampling_keys:
                problems.append(f"datasets.{name} is released (read from {ds['released']['folder']}), not sampled: "
                                f"remove {', '.join(sampling_keys)}")
            continue
        if ds["generator"] not in generators:
            problems.append(f"datasets.{name}.generator '{ds['generator']}' is not defined under 'generators'")
        elif not generator_unet(config, ds["generator"])["is_context_conditional"]:
            problems.append(f"datasets.{name}.generator '{ds['generator']}' is unconditional; use a conditional one")
        if ds["contexts"] not in contexts:
            problems.append(f"datasets.{name}.contexts '{ds['contexts']}' is not defined under 'contexts'")
        elif contexts[ds["contexts"]]["count"] < ds["identities"] + ds["oversample"]:
            problems.append(f"datasets.{name} samples {ds['identities'] + ds['oversample']} identities (identities + "
                            f"oversample) but contexts.{ds['contexts']}.count is {contexts[ds['contexts']]['count']}")
    seen = set()
    for i, exp in enumerate(config["experiments"]):
        if exp["name"] in seen:
            problems.append(f"experiments[{i}].name '{exp['name']}' is used twice")
        seen.add(exp["name"])
        if is_evaluation_only(exp):
            training_keys = sorted({"dataset", "width", "depth", "augmentation", "backbone"} & set(exp))
            if training_keys:
                problems.append(f"experiments[{i}] ('{exp['name']}') evaluates the given weights, so it trains on "
                                f"nothing: remove {', '.join(training_keys)} (its architecture is `model`)")
            continue
        if exp["dataset"] not in datasets:
            problems.append(f"experiments[{i}].dataset '{exp['dataset']}' is not defined under 'datasets'")
            continue
        ds = datasets[exp["dataset"]]
        problems += fr_split_problems(f"experiments[{i}] ('{exp['name']}', dataset '{exp['dataset']}')",
                                      ds["identities"], ds["images_per_identity"], exp["width"], exp["depth"],
                                      config["fr"]["train"]["val_identities"])
    if config["data"]["source"] == "world":  # the real reference row and the stand-in embedder train on the labelled set
        world = config["data"]["world"]
        trainings = {"fr.train": config["fr"]["train"]}
        if config["embedder"]["source"] == "train":
            trainings["embedder.train"] = config["embedder"]["train"]
        for where, train in trainings.items():
            problems += fr_split_problems(f"{where} (the labelled face world)", world["labelled_identities"],
                                          world["labelled_images_per_identity"], train["width"], train["depth"],
                                          train["val_identities"])
    return problems


def replicate_name(name: str, replicate: int) -> str:
    """The name of replicate `replicate` of a generator, context set, dataset or experiment (0: itself)."""
    return name if replicate == 0 else f"{name}_rep{replicate}"


def configured_name(name: str, replicate: int) -> str:
    """The configured name behind replicate `replicate`'s copy `name` (`replicate_name`'s inverse)."""
    return name.removesuffix(f"_rep{replicate}") if replicate else name


def with_replicates(config: Mapping[str, Any]) -> dict[str, Any]:
    """The `generators`, `contexts`, `datasets` and `experiments` sections with replicates 1 .. N-1
    (N = `replicates`) of every experiment's chain added, for `config.update(...)`.

    Replicate r of an experiment is its own experiment (`<name>_rep<r>`) on its own dataset, contexts
    and generators (two-stage contexts: their unconditional generator too), each carrying
    `replicate: r`, which adds r to every seed of the chain (see `replicate_of`). What does not
    depend on those seeds (the rendered world or the fetched data, the embedder, the autoencoder, a
    published generator or dataset) is shared; an evaluation-only experiment has no seed and stays one
    row. Replicate 0 is the config as written.
    """
    sections = {key: dict(config[key]) for key in ("generators", "contexts", "datasets")}
    experiments = list(config["experiments"])

    def add(section: str, name: str, replicate: int, **changes: Any) -> str:
        copy_name = replicate_name(name, replicate)
        existing = sections[section].get(copy_name)
        copy = {**config[section][name], **changes, "replicate": replicate}
        if existing is not None and existing != copy:
            raise ConfigError(f"replicate {replicate} of {section}.{name} would be named '{copy_name}', which the "
                              f"config already uses; rename it")
        sections[section][copy_name] = copy
        return copy_name

    def generator(name: str, replicate: int) -> str:  # a published generator has no seed: every replicate samples it
        return name if config["generators"][name]["pretrained"] else add("generators", name, replicate)

    def dataset(name: str, replicate: int) -> str:  # a released dataset has no seed: every replicate trains on it
        ds = config["datasets"][name]
        if is_released(ds):
            return name
        ctx = config["contexts"][ds["contexts"]]
        ctx_changes = {"generator": generator(ctx["generator"], replicate)} if ctx["kind"] == "two_stage" else {}
        return add("datasets", name, replicate, generator=generator(ds["generator"], replicate),
                   contexts=add("contexts", ds["contexts"], replicate, **ctx_changes))

    for replicate in range(1, config["replicates"]):
        for exp in config["experiments"]:
            if is_evaluation_only(exp):  # nothing seeded: one row
                continue
            name = replicate_name(exp["name"], replicate)
            if any(e["name"] == name for e in experiments):
                raise ConfigError(f"replicate {replicate} of experiment '{exp['name']}' would be named '{name}', "
                                  f"which the config already uses; rename it")
            experiments.append({**exp, "name": name, "dataset": dataset(exp["dataset"], replicate),
                                "replicate": replicate})
    return {**sections, "experiments": experiments}


def replicate_of(spec: Mapping[str, Any]) -> int:
    """Which replicate a generator, context set, dataset or experiment belongs to (0: as configured)."""
    return spec.get("replicate", 0)


# FR validation's 10-fold verification of held-out identities needs both kinds of pair in every fold
MIN_VAL_IDENTITIES, MIN_VAL_GENUINE_PAIRS = 2, 10


def fr_split_problems(where: str, identities: int, images: int, width: int | None, depth: int | None,
                      val_identities: int) -> list[str]:
    """What FR training on `identities` x `images` faces would refuse: `width` training identities
    plus `val_identities` held out of the same set (the last ones), `depth` images of each."""
    depth = images if depth is None else depth
    if depth > images:
        return [f"{where} asks depth {depth} images per identity but the set has {images}"]
    if (width or 1) + val_identities > identities:
        return [f"{where} trains on width {width} identities and holds out val_identities="
                f"{val_identities} more for validation: it needs {(width or 1) + val_identities} identities, the set "
                f"has {identities}; raise the dataset's identities or lower the width"]
    genuine = val_identities * math.comb(depth, 2)
    if val_identities and (val_identities < MIN_VAL_IDENTITIES or genuine < MIN_VAL_GENUINE_PAIRS):
        return [f"{where}: validation on {val_identities} identities x {depth} images gives {genuine} genuine pairs; "
                f"its 10 folds need >= {MIN_VAL_IDENTITIES} identities and >= {MIN_VAL_GENUINE_PAIRS} genuine pairs "
                f"(raise val_identities or depth)"]
    return []


# Config keys of each face-world set's size (identities first, then images per identity where a set
# has several); every image also depends on data.world's seed, image_size and nuisance_strength.
WORLD_SET_SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "ffhq": ("ffhq_identities",),
    "labelled": ("labelled_identities", "labelled_images_per_identity"),
    "lfw": ("lfw_identities", "lfw_images_per_identity", "lfw_pairs_per_fold"),
}


def world_set_size_keys(kind: str) -> tuple[str, ...]:
    """The size keys of face-world set `kind`, refusing an unknown kind."""
    if kind not in WORLD_SET_SIZE_KEYS:
        raise ValueError(f"unknown world set kind {kind!r}; expected one of {tuple(WORLD_SET_SIZE_KEYS)}")
    return WORLD_SET_SIZE_KEYS[kind]


def world_set_config(world: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The part of the `data.world` config that set `kind`'s files depend on. Its render rule gets only
    this, so resizing the benchmark re-renders neither the training faces nor all that is made of them.
    (Here, not in `world`, so that the Snakefile need not import torch to build its params.)"""
    return {key: world[key] for key in ("seed", "image_size", "nuisance_strength", *world_set_size_keys(kind))}


def canonical_json(value: Any) -> str:
    """The one text form of a config subtree: key order in the YAML never changes it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def load_yaml(path: str | os.PathLike) -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}
