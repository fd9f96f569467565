# Evaluation: LFW(-like) verification of every FR model (results/eval/lfw.csv, the main target),
# identity separability and leakage of every synthetic dataset.


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
    threads: 8
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
        shards=lambda w: expand("results/samples/{dataset}/shard{shard}", dataset=w.dataset, shard=SHARDS),
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
    threads: 8
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
