# Evaluation: LFW(-like) verification of every FR model (results/eval/lfw.csv, the main target),
# identity separability and leakage of every synthetic dataset.


def evaluated_model(model):
    """Backbone, its architecture, and which LFW images it sees (FR models: aligned; embedder: whole)."""
    if model == "embedder":
        return {"backbone": "results/embedder/backbone.pt", "model": config["embedder"]["model"],
                "images": "results/data/lfw/images"}
    return {"backbone": f"results/fr/{model}/backbone.pt", "images": "results/aligned/real/lfw",
            "model": fr_backbone(model)}


def experiment_row(model):
    """The descriptive columns of a model's row in lfw.csv."""
    if model in EXPERIMENTS:
        exp = EXPERIMENTS[model]
        ds = config["datasets"][exp["dataset"]]
        gen = config["generators"][ds["generator"]]
        return {"experiment": model, "generator": ds["generator"],
                "condition": gen["unet"].get("condition_type", config["ldm"]["unet"]["condition_type"]),
                "cpd": gen["unet"].get("context_dropout_probability",
                                       config["ldm"]["unet"]["context_dropout_probability"]),
                "contexts": config["contexts"][ds["contexts"]]["kind"], "identities": exp["width"],
                "images_per_identity": exp["depth"], "augmentation": exp["augmentation"],
                "backbone": str(fr_backbone(model)["arch"])}
    source = "face-world labelled images" if model == "real_reference" else "stand-in embedder"
    return {"experiment": model, "generator": "", "condition": "", "cpd": "", "contexts": source,
            "identities": "", "images_per_identity": "", "augmentation": "",
            "backbone": str(evaluated_model(model)["model"]["arch"])}


rule eval_lfw:
    """The insightface 10-fold protocol on the LFW(-like) pairs for one model (one CSV row)."""
    input:
        backbone=lambda w: evaluated_model(w.model)["backbone"],
        images=lambda w: evaluated_model(w.model)["images"],
        pairs="results/data/lfw/pairs.txt",
    output:
        row="results/eval/lfw/{model}.csv",
        scores="results/eval/lfw/{model}_scores.npz",
    params:
        settings=lambda w: settings(model=evaluated_model(w.model)["model"], row=experiment_row(w.model),
                                    evaluation=config["evaluation"]),
        device=config["device"],
    log:
        "results/logs/eval_lfw/{model}.log",
    benchmark:
        "results/benchmarks/eval_lfw/{model}.tsv"
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/eval_lfw.py"


rule lfw_table:
    """results/eval/lfw.csv: one row per experiment (+ the reference rows on the face world)."""
    input:
        rows=expand("results/eval/lfw/{model}.csv", model=list(EXPERIMENTS) + REFERENCE_MODELS),
    output:
        table="results/eval/lfw.csv",
    log:
        "results/logs/lfw_table.log",
    benchmark:
        "results/benchmarks/lfw_table.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/concat_tables.py"


rule embed_samples:
    """Embed every raw sample of a synthetic dataset with the identity embedder (the contexts' space)."""
    input:
        shards=lambda w: expand("results/samples/{{dataset}}/shard{shard}", shard=shards(w.dataset)),
        backbone="results/embedder/backbone.pt",
    output:
        embeddings="results/embeddings/samples/{dataset}.npz",
        manifest="results/embeddings/samples/{dataset}.csv",
    params:
        settings=expensive(model=config["embedder"]["model"], extract=config["embedder"]["extract"]),
        device=config["device"],
    log:
        "results/logs/embed_samples/{dataset}.log",
    benchmark:
        "results/benchmarks/embed_samples/{dataset}.tsv"
    threads: workflow.cores
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/extract_embeddings.py"


rule synthetic_quality:
    """Identity separability, identity consistency with the contexts, and leakage of one dataset."""
    input:
        samples="results/embeddings/samples/{dataset}.npz",
        contexts=lambda w: f"results/contexts/{config['datasets'][w.dataset]['contexts']}.npz",
        training="results/embeddings/ffhq.npz",
    output:
        separability="results/eval/separability/{dataset}.csv",
        leakage="results/eval/leakage/{dataset}.csv",
        identities="results/eval/leakage/{dataset}_identities.csv",
    params:
        settings=lambda w: settings(evaluation=config["evaluation"], dataset=w.dataset),
    log:
        "results/logs/synthetic_quality/{dataset}.log",
    benchmark:
        "results/benchmarks/synthetic_quality/{dataset}.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/synthetic_quality.py"


rule quality_table:
    """results/eval/{separability,leakage}.csv: one row per synthetic dataset."""
    input:
        rows=lambda w: expand("results/eval/{table}/{dataset}.csv", table=w.table, dataset=config["datasets"]),
    output:
        table="results/eval/{table}.csv",
    wildcard_constraints:
        table="separability|leakage",
    log:
        "results/logs/quality_table/{table}.log",
    benchmark:
        "results/benchmarks/quality_table/{table}.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/concat_tables.py"
