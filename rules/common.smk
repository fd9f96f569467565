# Shared helpers of the rules: config look-ups, canonical settings JSON, names of experiments.

import re

from idiff_core import __version__
from idiff_core.config import (canonical_json, configured_name, embedding_settings, generator_ldm, generator_model,
                               generator_release, generator_unet, image_size, is_evaluation_only, is_released,
                               replicate_of, world_set_config)

ENV = "../envs/idiff.yaml"
WORLD = config["data"]["source"] == "world"
EXPERIMENTS = {e["name"]: e for e in config["experiments"]}
# Experiments that train an FR model (the others evaluate given weights), and datasets sampled from a
# generator (the others are read from a published release).
TRAINED_EXPERIMENTS = [name for name, e in EXPERIMENTS.items() if not is_evaluation_only(e)]
SAMPLED_DATASETS = [name for name, ds in config["datasets"].items() if not is_released(ds)]
RELEASED_DATASETS = [name for name, ds in config["datasets"].items() if is_released(ds)]
# Models evaluated on the LFW(-like) benchmark: every experiment, plus, on the embedded face world,
# an FR model trained on the world's real labelled faces and the stand-in embedder itself.
REFERENCE_MODELS = ["real_reference", "embedder"] if WORLD else []
SHARDS = range(config["sampling"]["shards"])


def settings(**subtrees):
    """Canonical JSON of exactly the config a job reads: reruns follow the values, not the YAML order."""
    return canonical_json(subtrees)


def expensive(**subtrees):
    """As `settings`, plus the package version, so a release with changed numerics reruns the rule."""
    return settings(idiff_core_version=__version__, **subtrees)


def names_regex(names):
    return "|".join(re.escape(n) for n in names) or "(?!)"


def is_conditional(name):
    return generator_unet(config, name)["is_context_conditional"]


# ---- LDM training (rules/ldm.smk)

TRAINED_GENERATORS = [g for g, v in config["generators"].items() if not v["pretrained"]]


PUBLISHED_GENERATORS = [g for g, v in config["generators"].items() if v["pretrained"]]


def ldm_training_inputs(w):
    inputs = {"images": "results/data/ffhq", "latents": "results/latents/ffhq.pt",
              "decoder": "results/autoencoder/first_stage_decoder_state_dict.pt"}
    if is_conditional(w.generator):
        inputs["embeddings"] = "results/embeddings/ffhq.npz"
    return inputs


# ---- identity contexts (rules/contexts.smk)

def context_inputs(w):
    spec = config["contexts"][w.contexts]
    if spec["kind"] == "two_stage":
        return {"generator": f"results/ldm/{spec['generator']}/ema.ckpt",
                "decoder": "results/autoencoder/first_stage_decoder_state_dict.pt",
                "backbone": "results/embedder/backbone.pt"}
    if spec["kind"] == "real":
        return {"vectors": f"results/embeddings/{spec['source']}.npz"}
    if spec["kind"] == "file":
        return {"vectors": spec["file"]}
    return {}


def context_settings(name):
    spec = config["contexts"][name]
    subtrees = {"contexts": {"kind": spec["kind"], "count": spec["count"], "dim": spec["dim"],
                             "seed": spec["seed"] + replicate_of(spec)}}
    if spec["kind"] == "two_stage":
        subtrees.update(generator=generator_model(config, spec["generator"]), embedder=embedding_settings(config),
                        # unconditional: no guidance (nor a rerun when a guidance scale is set)
                        sampler={**config["sampling"]["sampler"], "guidance_scale": None})
    return settings(**subtrees)


# ---- sampling (rules/sampling.smk), released datasets (rules/assembly.smk)

def dataset_images(dataset):
    """A dataset's images before alignment, a folder per shard: its sample shards, or the one folder a
    released dataset is imported into."""
    if is_released(config["datasets"][dataset]):
        return [f"results/released/{dataset}"]
    return expand("results/samples/{dataset}/shard{shard}", dataset=dataset, shard=SHARDS)


def shard_images(w):
    """The images align_shard aligns: a sampled shard, or a released dataset's imported images."""
    return dataset_images(w.dataset)[int(w.shard)]


def assembly_inputs(w):
    """Images and manifests a dataset is assembled from: its aligned shards, or a released dataset's
    imported images as they are (`released.align: false`)."""
    released = config["datasets"][w.dataset].get("released")
    if released and not released["align"]:
        return {"images": [f"results/released/{w.dataset}"], "manifests": [f"results/released/{w.dataset}.csv"]}
    shards = range(len(dataset_images(w.dataset)))
    return {"images": expand("results/aligned/{dataset}/shard{shard}", dataset=w.dataset, shard=shards),
            "manifests": expand("results/aligned/{dataset}/shard{shard}.csv", dataset=w.dataset, shard=shards)}


def dataset_sampler(dataset):
    """How a dataset is sampled: sampling.sampler with the dataset's own `sampler` overrides."""
    return {**config["sampling"]["sampler"], **config["datasets"][dataset].get("sampler", {})}


def sampling_settings(dataset):
    """A dataset's sampling (`sampling.SamplingSettings`) and the generator it samples."""
    ds = config["datasets"][dataset]
    sampling = {"sampler": dataset_sampler(dataset), "shards": config["sampling"]["shards"],
                "seed": config["sampling"]["seed"] + replicate_of(ds), "images_per_identity": ds["images_per_identity"],
                "identities": ds["identities"] + ds["oversample"]}
    return settings(sampling=sampling, generator=generator_model(config, ds["generator"]))


def quality_inputs(w):
    """What a dataset's quality is measured from: its embedded images, the training faces' embeddings,
    and (sampled datasets) the contexts they were drawn from."""
    inputs = {"samples": f"results/embeddings/samples/{w.dataset}.npz", "training": "results/embeddings/ffhq.npz"}
    if w.dataset in SAMPLED_DATASETS:
        inputs["contexts"] = f"results/contexts/{config['datasets'][w.dataset]['contexts']}.npz"
    return inputs


# ---- face-recognition training (rules/recognition.smk)

def fr_backbone(model):
    """The iresnet of an FR model: an evaluated experiment's `model`, the experiment's backbone, else the shared one."""
    if model in EXPERIMENTS and is_evaluation_only(EXPERIMENTS[model]):
        return EXPERIMENTS[model]["model"]
    spec = dict(config["fr"]["model"])
    if model in EXPERIMENTS and EXPERIMENTS[model]["backbone"] is not None:
        spec["arch"] = EXPERIMENTS[model]["backbone"]
    return spec


def fr_settings(model):
    """FR training config of a model: the shared settings with the experiment's choices."""
    train = {**config["fr"]["train"], **fr_backbone(model)}
    if model in EXPERIMENTS:
        exp = EXPERIMENTS[model]
        train.update(width=exp["width"], depth=exp["depth"], randaugment=exp["augmentation"] == "randaugment",
                     seed=train["seed"] + replicate_of(exp))
    return expensive(fr=train)


def fr_training_images(w):
    if w.model == "real_reference":
        return "results/aligned/real/labelled"
    return f"results/datasets/{EXPERIMENTS[w.model]['dataset']}"


# ---- evaluation (rules/evaluation.smk)

def evaluated_model(model):
    """Backbone, its architecture, and which LFW images it sees (FR models: aligned; embedder: whole)."""
    if model == "embedder":
        return {"backbone": "results/embedder/backbone.pt", "model": config["embedder"]["model"],
                "images": "results/data/lfw/images"}
    trained = model not in EXPERIMENTS or not is_evaluation_only(EXPERIMENTS[model])
    return {"backbone": f"results/fr/{model}/backbone.pt" if trained else EXPERIMENTS[model]["weights"],
            "images": "results/aligned/real/lfw", "model": fr_backbone(model)}


def experiment_row(model):
    """The descriptive columns of a model's row in lfw.csv."""
    if model in EXPERIMENTS and is_evaluation_only(EXPERIMENTS[model]):
        return {"experiment": model, "replicate": 0, "generator": "", "condition": "", "cpd": "", "guidance": "",
                "contexts": "evaluation only", "identities": None, "images_per_identity": None, "augmentation": "",
                "backbone": str(fr_backbone(model)["arch"]), "weights": EXPERIMENTS[model]["weights"]}
    if model in EXPERIMENTS:
        exp = EXPERIMENTS[model]
        replicate = replicate_of(exp)
        row = {"experiment": configured_name(model, replicate), "replicate": replicate,
               "generator": "released", "condition": "", "cpd": "", "guidance": "", "contexts": "released",
               "identities": exp["width"], "images_per_identity": exp["depth"], "augmentation": exp["augmentation"],
               "backbone": str(fr_backbone(model)["arch"])}
        ds = config["datasets"][exp["dataset"]]
        if not is_released(ds):
            unet = generator_unet(config, ds["generator"])
            row.update(generator=configured_name(ds["generator"], replicate_of(config["generators"][ds["generator"]])),
                       condition=unet["condition_type"], cpd=unet["context_dropout_probability"],
                       guidance=dataset_sampler(exp["dataset"])["guidance_scale"],
                       contexts=config["contexts"][ds["contexts"]]["kind"])
        return {**row, "dataset": configured_name(exp["dataset"], replicate_of(ds))}
    real = model == "real_reference"
    train = config["fr"]["train"]
    return {"experiment": model, "replicate": 0, "generator": "", "condition": "", "cpd": "", "guidance": "",
            "contexts": "face-world labelled images" if real else "stand-in embedder",
            "identities": train["width"] if real else None,  # None (empty): every identity / image
            "images_per_identity": train["depth"] if real else None, "augmentation": "",
            "backbone": str(evaluated_model(model)["model"]["arch"])}


# ---- embeddings (rules/embedder.smk)

EMBEDDED_IMAGES = {"ffhq": "results/data/ffhq", "lfw": "results/data/lfw/images"}


# ---- alignment (rules/alignment.smk)

ALIGNED_SOURCES = {"lfw": "results/data/lfw/images", "labelled": "results/data/labelled"}


def aligned_real_inputs(w):
    """A real set's images; for the benchmark also its pairs.txt: only the images the pairs name are
    aligned (LFW: ~7,700 of 13,233 photos), and they are all that eval_lfw reads."""
    inputs = {"images": ALIGNED_SOURCES[w.imageset]}
    if w.imageset == "lfw":
        inputs["pairs"] = "results/data/lfw/pairs.txt"
    return inputs


def aligned_subset(imageset):
    """What of the labelled set to align: only what the real reference trains and validates on
    (fr.train's width, depth and val_identities; 68 of 300 identities at the default); None for the
    benchmark (its pairs choose)."""
    if imageset != "labelled":
        return None
    train = config["fr"]["train"]
    return {key: train[key] for key in ("width", "depth", "val_identities")}


# ---- .bin benchmarks, LFW-context experiment, report figures (rules/evaluation.smk, rules/report.smk)

EVALUATED_MODELS = list(EXPERIMENTS) + REFERENCE_MODELS
BENCHMARKS = list(config["data"]["benchmarks"])
CONDITIONAL_GENERATORS = [g for g in config["generators"] if is_conditional(g)]


def benchmark_rows():
    """Every model's row on every .bin benchmark, model by model."""
    return [f"results/eval/benchmarks/{b}/{m}.csv" for m in EVALUATED_MODELS for b in BENCHMARKS]


def lfw_context_settings():
    """The LFW-context experiment's settings: its own keys, the sampler, the embedder and the seed."""
    return {**config["evaluation"]["lfw_contexts"], "seed": config["evaluation"]["seed"],
            "sampler": config["sampling"]["sampler"], "embedder": embedding_settings(config)}


def used_generators():
    """Generators the default targets train: those sampled from, two-stage context sources, conditional ones."""
    sampled = [config["datasets"][name] for name in SAMPLED_DATASETS]
    used = {ds["generator"] for ds in sampled} | set(CONDITIONAL_GENERATORS)
    used |= {config["contexts"][ds["contexts"]]["generator"] for ds in sampled
             if config["contexts"][ds["contexts"]]["kind"] == "two_stage"}
    return [g for g in config["generators"] if g in used]


def training_logs():
    """The report's training curves: name -> CSV log (FR models, embedder, LDMs, autoencoder)."""
    logs = {f"fr_{m}": f"results/fr/{m}/metrics.csv" for m in TRAINED_EXPERIMENTS + REFERENCE_MODELS
            if m != "embedder"}
    if config["embedder"]["source"] == "train":
        logs["embedder"] = "results/embedder/metrics.csv"
    logs.update({f"ldm_{g}": f"results/ldm/{g}/loss.csv" for g in used_generators() if g in TRAINED_GENERATORS})
    if config["autoencoder"]["source"] == "train":
        logs["autoencoder"] = "results/autoencoder/loss.csv"
    return logs


# Tables of the datasets' quality (appearance compares samples with the training faces: sampled datasets only)
QUALITY_TABLES = ("separability", "leakage") + (("appearance",) if SAMPLED_DATASETS else ())
VERIFICATION_BENCHMARKS = ["lfw"] + [f"bin_{b}" for b in BENCHMARKS]


def verification_scores(bench):
    """Each model's pair distances on the LFW(-like) benchmark or a .bin one (`bin_<name>`)."""
    folder = "results/eval/lfw" if bench == "lfw" else f"results/eval/benchmarks/{bench[len('bin_'):]}"
    return {m: f"{folder}/{m}_scores.npz" for m in EVALUATED_MODELS}


def report_tables():
    """The report's tables: name -> result CSV."""
    tables = {t: f"results/eval/{t}.csv" for t in ("lfw", "lfw_summary") + QUALITY_TABLES}
    if BENCHMARKS:
        tables.update(benchmarks="results/eval/benchmarks.csv", benchmarks_paper="results/eval/benchmarks_paper.csv")
    tables.update({f"lfw_contexts_{g}": f"results/eval/lfw_contexts/{g}.csv" for g in CONDITIONAL_GENERATORS})
    return tables


def report_figures():
    """Every report figure and table the plot rules make (targets of rule all)."""
    return (expand("results/report/grids/{dataset}_{stage}.png", dataset=SAMPLED_DATASETS,
                   stage=["samples", "aligned"])
            + [f"results/report/curves/{name}.png" for name in training_logs()]
            + [f"results/report/verification/{b}/roc.png" for b in VERIFICATION_BENCHMARKS]
            + ["results/report/separability/roc.png"]
            + [f"results/report/tables/{t}.html" for t in report_tables()])
