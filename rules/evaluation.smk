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
                                    verification=config["evaluation"]["verification"]),
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


rule lfw_summary:
    """results/eval/lfw_summary.csv: each experiment's mean, sd and range over its replicates."""
    input:
        table="results/eval/lfw.csv",
    output:
        summary="results/eval/lfw_summary.csv",
    log:
        "results/logs/lfw_summary.log",
    benchmark:
        "results/benchmarks/lfw_summary.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/lfw_summary.py"


rule embed_samples:
    """Embed every raw sample of a synthetic dataset (a released one: its images as released) with the
    identity embedder (the contexts' space)."""
    input:
        shards=lambda w: dataset_images(w.dataset),
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
    """Identity separability, identity consistency with the contexts (sampled datasets), and leakage of one dataset."""
    input:
        unpack(quality_inputs),
    output:
        separability="results/eval/separability/{dataset}.csv",
        leakage="results/eval/leakage/{dataset}.csv",
        identities="results/eval/leakage/{dataset}_identities.csv",
    params:
        settings=lambda w: settings(seed=config["evaluation"]["seed"], leakage=config["evaluation"]["leakage"],
                                    dataset=w.dataset,
                                    sampler=None if w.dataset in RELEASED_DATASETS else dataset_sampler(w.dataset)),
    log:
        "results/logs/synthetic_quality/{dataset}.log",
    benchmark:
        "results/benchmarks/synthetic_quality/{dataset}.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/synthetic_quality.py"


rule sample_appearance:
    """MTCNN's detection rate and the colour of one dataset's samples against the training faces'."""
    input:
        samples=lambda w: expand("results/samples/{dataset}/shard{shard}", dataset=w.dataset, shard=SHARDS),
        training=EMBEDDED_IMAGES["ffhq"],
        summary="results/datasets/{dataset}_summary.json",
    output:
        table="results/eval/appearance/{dataset}.csv",
    wildcard_constraints:
        dataset=names_regex(SAMPLED_DATASETS),
    params:
        settings=lambda w: settings(dataset=w.dataset, seed=config["evaluation"]["seed"],
                                    training_images=config["evaluation"]["appearance"]["training_images"]),
    log:
        "results/logs/sample_appearance/{dataset}.log",
    benchmark:
        "results/benchmarks/sample_appearance/{dataset}.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/sample_appearance.py"


rule quality_table:
    """results/eval/{separability,leakage,appearance}.csv: one row per dataset (appearance: per sampled one)."""
    input:
        rows=lambda w: expand("results/eval/{table}/{dataset}.csv", table=w.table,
                              dataset=SAMPLED_DATASETS if w.table == "appearance" else list(config["datasets"])),
    output:
        table="results/eval/{table}.csv",
    wildcard_constraints:
        table="separability|leakage|appearance",
    log:
        "results/logs/quality_table/{table}.log",
    benchmark:
        "results/benchmarks/quality_table/{table}.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/concat_tables.py"


rule eval_benchmark:
    """The insightface protocol on one `.bin` benchmark (data.benchmarks) for one model."""
    input:
        backbone=lambda w: evaluated_model(w.model)["backbone"],
        benchmark=lambda w: config["data"]["benchmarks"][w.benchmark],
    output:
        row="results/eval/benchmarks/{benchmark}/{model}.csv",
        scores="results/eval/benchmarks/{benchmark}/{model}_scores.npz",
    wildcard_constraints:
        benchmark=names_regex(BENCHMARKS),
    params:
        settings=lambda w: settings(model=evaluated_model(w.model)["model"],
                                    row={**experiment_row(w.model), "benchmark": w.benchmark},
                                    verification=config["evaluation"]["verification"]),
        device=config["device"],
    log:
        "results/logs/eval_benchmark/{benchmark}/{model}.log",
    benchmark:
        "results/benchmarks/eval_benchmark/{benchmark}/{model}.tsv"
    threads: 8
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/eval_benchmark.py"


rule benchmark_table:
    """results/eval/benchmarks.csv: one row per model x .bin benchmark (+ the paper-style accuracy table)."""
    input:
        rows=benchmark_rows(),
    output:
        table="results/eval/benchmarks.csv",
        paper="results/eval/benchmarks_paper.csv",
    log:
        "results/logs/benchmark_table.log",
    benchmark:
        "results/benchmarks/benchmark_table.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/benchmark_table.py"


rule lfw_contexts:
    """The paper's LFW-context experiment: LFW embeddings condition the generator; real-real,
    real-variation and variation-variation score distributions on LFW's pairs."""
    input:
        embeddings="results/embeddings/lfw.npz",
        images="results/data/lfw/images",
        pairs="results/data/lfw/pairs.txt",
        generator="results/ldm/{generator}/ema.ckpt",
        decoder="results/autoencoder/first_stage_decoder_state_dict.pt",
        backbone="results/embedder/backbone.pt",
    output:
        table="results/eval/lfw_contexts/{generator}.csv",
        scores="results/eval/lfw_contexts/{generator}_scores.npz",
        histogram=report("results/eval/lfw_contexts/{generator}_histogram.png",
                         caption="../report/lfw_contexts_histogram.rst", category="LFW contexts",
                         subcategory="{generator}", labels={"generator": "{generator}", "figure": "scores"}),
        grid=report("results/eval/lfw_contexts/{generator}_grid.png", caption="../report/lfw_contexts_grid.rst",
                    category="LFW contexts", subcategory="{generator}",
                    labels={"generator": "{generator}", "figure": "variations"}),
    wildcard_constraints:
        generator=names_regex(CONDITIONAL_GENERATORS),
    params:
        settings=lambda w: expensive(lfw_contexts=lfw_context_settings(),
                                     generator=generator_model(config, w.generator)),
        device=config["device"],
    log:
        "results/logs/lfw_contexts/{generator}.log",
    benchmark:
        "results/benchmarks/lfw_contexts/{generator}.tsv"
    threads: 8
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/lfw_contexts.py"
