# Face-recognition training on each experiment's synthetic dataset (and, on the face world, on the
# real labelled faces as the reference row).


def fr_backbone(model):
    """The iresnet of an FR model: the experiment's backbone, else the shared one."""
    spec = dict(config["fr"]["model"])
    if model in EXPERIMENTS and EXPERIMENTS[model]["backbone"] is not None:
        spec["arch"] = EXPERIMENTS[model]["backbone"]
    return spec


def fr_settings(model):
    """FR training config of a model: the shared settings with the experiment's choices."""
    train = {**config["fr"]["train"], **fr_backbone(model)}
    if model in EXPERIMENTS:
        exp = EXPERIMENTS[model]
        train.update(width=exp["width"], depth=exp["depth"], randaugment=exp["augmentation"] == "randaugment")
    return expensive(fr=train)


def fr_training_images(w):
    if w.model == "real_reference":
        return "results/aligned/real/labelled"
    return f"results/datasets/{EXPERIMENTS[w.model]['dataset']}"


rule train_fr:
    """Train an FR model (iresnet + CosFace) on one training set; keep the best-validation backbone."""
    input:
        images=fr_training_images,
    output:
        backbone="results/fr/{model}/backbone.pt",
        metrics="results/fr/{model}/metrics.csv",
    wildcard_constraints:
        model=names_regex(list(EXPERIMENTS) + (["real_reference"] if WORLD else [])),
    params:
        settings=lambda w: fr_settings(w.model),
        state=lambda w: f"results/state/fr/{w.model}",
        device=config["device"],
    log:
        "results/logs/train_fr/{model}.log",
    benchmark:
        "results/benchmarks/train_fr/{model}.tsv"
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/train_fr.py"
