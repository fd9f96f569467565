"""Validate the workflow config against its JSON schema, with messages that name the key.

The Snakefile calls `validate_config` before any rule is built, so a typo or a wrong type stops
the run at once instead of hours later inside a job.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

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


def _unet(config: Mapping[str, Any], generator: str) -> dict:
    return {**config["ldm"]["unet"], **config["generators"][generator]["unet"]}


def _cross_reference_problems(config: Mapping[str, Any]) -> list[str]:
    """Names used in one section must be defined in another (experiments -> datasets -> ...)."""
    problems = []
    generators, contexts, datasets = config["generators"], config["contexts"], config["datasets"]
    for name, ctx in contexts.items():
        if ctx["kind"] == "two_stage":
            gen = ctx.get("generator")
            if gen not in generators:
                problems.append(f"contexts.{name}.generator '{gen}' is not defined under 'generators'")
            elif _unet(config, gen)["is_context_conditional"]:
                problems.append(f"contexts.{name}.generator '{gen}' must be an unconditional generator")
    for name, ds in datasets.items():
        if ds["generator"] not in generators:
            problems.append(f"datasets.{name}.generator '{ds['generator']}' is not defined under 'generators'")
        elif not _unet(config, ds["generator"])["is_context_conditional"]:
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
        if exp["dataset"] not in datasets:
            problems.append(f"experiments[{i}].dataset '{exp['dataset']}' is not defined under 'datasets'")
            continue
        ds = datasets[exp["dataset"]]
        if exp["width"] > ds["identities"] or exp["depth"] > ds["images_per_identity"]:
            problems.append(f"experiments[{i}] asks {exp['width']} x {exp['depth']} but dataset "
                            f"'{exp['dataset']}' has {ds['identities']} x {ds['images_per_identity']}")
    return problems


# Config keys of each face-world set's size (identities first, then images per identity where a set
# has several); every image also depends on data.world's seed, image_size and nuisance_strength.
WORLD_SET_SIZE_KEYS: dict[str, tuple[str, ...]] = {
    "ffhq": ("ffhq_identities",),
    "labelled": ("labelled_identities", "labelled_images_per_identity"),
    "lfw": ("lfw_identities", "lfw_images_per_identity", "lfw_pairs_per_fold"),
}


def world_set_config(world: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The part of the `data.world` config that set `kind`'s files depend on. Its render rule gets only
    this, so resizing the benchmark re-renders neither the training faces nor all that is made of them.
    (Here, not in `world`, so that the Snakefile need not import torch to build its params.)"""
    if kind not in WORLD_SET_SIZE_KEYS:
        raise ValueError(f"unknown world set kind {kind!r}; expected one of {tuple(WORLD_SET_SIZE_KEYS)}")
    return {key: world[key] for key in ("seed", "image_size", "nuisance_strength", *WORLD_SET_SIZE_KEYS[kind])}


def canonical_json(value: Any) -> str:
    """The one text form of a config subtree: key order in the YAML never changes it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def load_yaml(path: str | os.PathLike) -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}
