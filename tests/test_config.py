"""The config schema stops bad configs with messages naming the key; both DAGs hold every stage."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from idiff_core.config import (ConfigError, canonical_json, load_config, load_schema, validate_config,
                               with_replicates)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "config" / "schema.yaml")


def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def paper_config() -> dict:
    return load_config(REPO / "config" / "config.yaml", [REPO / "config" / "paper.yaml"])


@pytest.mark.parametrize("config", [default_config, paper_config], ids=["default", "paper"])
def test_shipped_configs_are_valid(config):
    validate_config(config(), SCHEMA)


def problems_of(config: dict) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    return str(err.value)


def test_unknown_key_is_named_with_the_allowed_ones():
    config = default_config()
    config["sampling"]["sampler"]["stepz"] = 10
    message = problems_of(config)
    assert "unknown config key 'sampling.sampler.stepz'" in message
    assert "steps" in message


def test_wrong_type_names_key_and_expected_type():
    config = default_config()
    config["alignment"]["min_face_size"] = "twenty"
    assert "config key 'alignment.min_face_size' must be of type integer" in problems_of(config)


def test_wrong_enum_value_lists_the_choices():
    config = default_config()
    config["sampling"]["sampler"]["method"] = "euler"
    message = problems_of(config)
    assert "sampling.sampler.method" in message and "dpmsolver++" in message


def test_missing_key_is_named():
    config = default_config()
    del config["ldm"]["unet"]["attention_heads"]
    assert "'ldm.unet' is missing 'attention_heads'" in problems_of(config)


def test_paper_scale_requires_the_elasticface_path():
    config = paper_config()
    config["embedder"]["weights"] = None
    assert "embedder.weights" in problems_of(config)


def test_a_file_context_set_requires_its_file():
    config = default_config()
    config["contexts"]["uniform"]["kind"] = "file"
    assert "config key 'contexts.uniform.file' must be of type string, got None" in problems_of(config)
    del config["contexts"]["uniform"]["file"]
    assert "'contexts.uniform' is missing 'file'" in problems_of(config)


def test_dangling_references_are_reported():
    config = default_config()
    config["experiments"][0]["dataset"] = "nope"
    config["datasets"]["uniform_cpd25"]["contexts"] = "missing"
    message = problems_of(config)
    assert "experiments[0].dataset 'nope'" in message and "contexts 'missing'" in message


def test_dataset_needing_more_contexts_than_exist_is_refused():
    config = default_config()
    config["contexts"]["uniform"]["count"] = 3
    assert "contexts.uniform.count is 3" in problems_of(config)


def test_experiment_larger_than_its_dataset_is_refused():
    config = default_config()
    config["experiments"][0]["depth"] = 999
    assert "asks" in problems_of(config)


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": {"y": 2, "x": 3}}) == canonical_json({"a": {"x": 3, "y": 2}, "b": 1})


STAGES = {"extract_embeddings", "split_autoencoder", "encode_latents", "train_ldm", "make_contexts", "sample_shard",
          "align_shard", "assemble_dataset", "train_fr", "eval_lfw", "lfw_table"}
DATA_RULES = {"default": {"render_world", "render_world_lfw", "train_embedder", "train_autoencoder"},
              "paper": {"fetch_ffhq", "fetch_lfw", "import_embedder", "fetch_autoencoder"}}


def dry_run(workdir: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(REPO / "Snakefile"),
                             "--directory", str(workdir), "results/eval/lfw.csv", *args],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.parametrize("name,args", [("default", ()),
                                       ("paper", ("--configfile", "config/paper.yaml", "config/rehearsal.yaml"))])
def test_dry_run_dag_contains_every_stage(name, args, tmp_path, request):
    if name == "paper":  # the pre-flight check wants the paper's input files: the rehearsal's stand-ins
        shutil.copytree(request.getfixturevalue("paper_standins"), tmp_path, dirs_exist_ok=True, copy_function=os.link)
    listed = set(re.findall(r"^(\w+)\s+\d+\s*$", dry_run(tmp_path, *args), flags=re.M))
    assert STAGES | DATA_RULES[name] <= listed, sorted(STAGES | DATA_RULES[name] - listed)


def test_bad_config_stops_snakemake_with_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampling:\n  shardz: 3\n")
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", str(bad)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "unknown config key 'sampling.shardz'" in result.stdout + result.stderr


def test_experiment_needs_its_validation_identities_on_top_of_its_width():
    config = default_config()
    dataset = config["datasets"]["uniform_cpd25"]
    config["experiments"][0]["width"] = dataset["identities"]
    message = problems_of(config)
    assert f"needs {dataset['identities'] + config['fr']['train']['val_identities']} identities" in message
    config = default_config()
    config["fr"]["train"]["val_identities"] = 1
    assert "validation on 1 identities" in problems_of(config)


def test_generator_may_not_encode_on_its_own():
    config = default_config()
    config["generators"]["ca_cpd25"]["training"]["encode_batch_size"] = 4
    assert "encoded once for every generator" in problems_of(config)


def test_replicates_copy_each_experiments_seeded_chain():
    config = paper_config()
    config["replicates"] = 2
    config["generators"]["ca_cpd50"]["pretrained"] = "released/ca_cpd50.ckpt"  # published: no seed, not copied
    expanded = with_replicates(config)
    copies = [e for e in expanded["experiments"] if e.get("replicate") == 1]
    assert [e["name"] for e in copies] == [f"{e['name']}_rep1" for e in config["experiments"]]
    assert expanded["datasets"]["two_stage_cpd25_rep1"] == {**config["datasets"]["two_stage_cpd25"], "replicate": 1,
                                                           "generator": "ca_cpd25_rep1", "contexts": "two_stage_rep1"}
    assert expanded["contexts"]["two_stage_rep1"]["generator"] == "uncond_rep1"
    assert expanded["datasets"]["two_stage_cpd50_rep1"]["generator"] == "ca_cpd50"
    assert set(expanded["generators"]) == {"ca_cpd25", "ca_cpd50", "uncond", "ca_cpd25_rep1", "uncond_rep1"}
    assert with_replicates(default_config())["experiments"] == default_config()["experiments"]  # 1 replicate: as is
    config["datasets"]["uniform_cpd25_rep1"] = dict(config["datasets"]["uniform_cpd25"])
    with pytest.raises(ConfigError, match="'uniform_cpd25_rep1', which the config already uses"):
        with_replicates(config)


RELEASED_DATASET = {"released": {"folder": "released/uniform_cpd25", "layout": "blocks", "tile_size": 112,
                                  "grid": [10, 5], "align": False}, "identities": 48, "images_per_identity": 12}
EVALUATED = {"name": "idiff_face_r50", "weights": "released/idiff_face_r50.pth",
             "model": {"arch": "iresnet50", "num_features": 512, "base_width": 64, "input_size": 112}}


def with_released(config: dict) -> dict:
    """`config` with a released dataset, an experiment training on it and an evaluation-only experiment."""
    config["datasets"]["published"] = copy.deepcopy(RELEASED_DATASET)
    config["experiments"] += [{**config["experiments"][0], "name": "on_published", "dataset": "published"},
                              copy.deepcopy(EVALUATED)]
    return config


def test_released_datasets_and_evaluated_weights_are_valid_experiments():
    validate_config(with_released(default_config()), SCHEMA)


def test_a_released_dataset_has_no_sampling_keys_and_blocks_need_their_grid():
    config = with_released(default_config())
    config["datasets"]["published"].update(generator="ca_cpd25", oversample=2)
    assert ("datasets.published is released (read from released/uniform_cpd25), not sampled: remove generator, "
            "oversample") in problems_of(config)
    config = with_released(default_config())
    config["datasets"]["published"]["released"]["grid"] = None
    assert "config key 'datasets.published.released.grid'" in problems_of(config)
    del config["datasets"]["uniform_cpd25"]["generator"]
    assert "'datasets.uniform_cpd25' is missing 'generator'" in problems_of(config)


def test_an_evaluated_experiment_names_its_architecture_and_trains_on_nothing():
    config = with_released(default_config())
    config["experiments"][-1]["dataset"] = "uniform_cpd25"
    assert "('idiff_face_r50') evaluates the given weights, so it trains on nothing: remove dataset" \
        in problems_of(config)
    config = with_released(default_config())
    del config["experiments"][-1]["model"]
    assert "'experiments.2' is missing 'model'" in problems_of(config)


def test_replicates_share_released_datasets_and_keep_one_evaluated_row():
    config = with_released(default_config())
    config["replicates"] = 2
    expanded = with_replicates(config)
    names = [e["name"] for e in expanded["experiments"]]
    assert names == ["uniform_cpd25", "on_published", "idiff_face_r50", "uniform_cpd25_rep1", "on_published_rep1"]
    assert expanded["experiments"][-1]["dataset"] == "published" and "published_rep1" not in expanded["datasets"]


def test_configfile_overrides_merge_key_by_key(tmp_path):
    override = tmp_path / "override.yaml"
    override.write_text(yaml.safe_dump({"ldm": {"unet": {"initial_channels": 96}}, "alignment": {"min_face_size": 1}}))
    base = load_config(REPO / "config/config.yaml")
    merged = load_config(REPO / "config/config.yaml", [override])
    assert merged["ldm"]["unet"] == {**base["ldm"]["unet"], "initial_channels": 96}
    assert merged["alignment"] == {**base["alignment"], "min_face_size": 1}
    assert merged["ldm"]["training"] == base["ldm"]["training"]


def _choices(path: str) -> set:
    """The enum the schema gives the key at `path` (dots; `*` for a name under a mapping)."""
    node = SCHEMA
    for part in path.split("."):
        while "$ref" in node or "oneOf" in node:
            node = (SCHEMA["$defs"][node["$ref"].split("/")[-1]] if "$ref" in node
                    else next(n for n in node["oneOf"] if n.get("type") != "null"))
        node = node["additionalProperties"] if part == "*" else node["properties"][part]
    while "$ref" in node:
        node = SCHEMA["$defs"][node["$ref"].split("/")[-1]]
    return set(node["enum"] if "enum" in node else next(n for n in node["oneOf"] if "enum" in n)["enum"])


def test_each_choice_the_schema_offers_is_one_the_code_implements():
    """The schema checks a config's choices at start-up; the code that implements them keeps its own
    list (it guards direct callers too). The two lists must not drift apart."""
    from idiff_core.alignment import FAILURE_POLICIES
    from idiff_core.data import ffhq, lfw
    from idiff_core.diffusion.samplers import SAMPLING_METHODS
    from idiff_core.diffusion.schedule import SCHEDULE_KINDS
    from idiff_core.evaluation.leakage import PER_IDENTITY_MODES
    from idiff_core.models.heads import MARGIN_KINDS
    from idiff_core.models.iresnet import ARCH_LAYERS
    from idiff_core.models.unet import CONDITION_TYPES
    from idiff_core.released_datasets import LAYOUTS
    from idiff_core.training.ldm import PRECISIONS

    implemented = {
        "data.ffhq.source": ffhq.SOURCES, "data.ffhq.variant": ffhq.VARIANTS, "data.lfw.source": lfw.SOURCES,
        "ldm.diffusion.schedule": SCHEDULE_KINDS, "ldm.unet.condition_type": CONDITION_TYPES,
        "ldm.training.precision": PRECISIONS, "sampling.sampler.method": SAMPLING_METHODS,
        "alignment.on_failure": FAILURE_POLICIES, "fr.train.head": MARGIN_KINDS,
        "evaluation.leakage.per_identity": PER_IDENTITY_MODES, "fr.model.arch": ARCH_LAYERS,
        "datasets.*.released.layout": LAYOUTS,
    }
    for path, choices in implemented.items():
        assert _choices(path) == set(choices), path
