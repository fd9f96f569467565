# Report figures and tables, drawn from the outputs of the other stages; every output here is
# flagged for `snakemake --report report.zip` with a caption from report/.


rule report_grids:
    """A grid of raw samples and one of aligned faces of a sampled dataset (first identities)."""
    input:
        samples=lambda w: expand("results/samples/{dataset}/shard{shard}", dataset=w.dataset, shard=SHARDS),
        aligned=lambda w: expand("results/aligned/{dataset}/shard{shard}", dataset=w.dataset, shard=SHARDS),
    output:
        samples=report("results/report/grids/{dataset}_samples.png", caption="../report/samples_grid.rst",
                       category="Samples", subcategory="{dataset}", labels={"dataset": "{dataset}", "images": "raw"}),
        aligned=report("results/report/grids/{dataset}_aligned.png", caption="../report/aligned_grid.rst",
                       category="Samples", subcategory="{dataset}",
                       labels={"dataset": "{dataset}", "images": "aligned"}),
    wildcard_constraints:
        dataset=names_regex(SAMPLED_DATASETS),
    params:
        settings=settings(report=config["evaluation"]["report"]),
    log:
        "results/logs/report_grids/{dataset}.log",
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/report_grids.py"


rule report_curves:
    """Training curves of every trained model (FR metrics, LDM and autoencoder losses)."""
    input:
        logs=list(training_logs().values()),
    output:
        figures=[report(f"results/report/curves/{name}.png", caption="../report/training_curves.rst",
                        category="Training curves", labels={"model": name}) for name in training_logs()],
    params:
        names=list(training_logs()),
    log:
        "results/logs/report_curves.log",
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/report_curves.py"


rule report_verification:
    """Genuine/impostor distance histograms of every model on one benchmark, and their ROC curves."""
    input:
        scores=lambda w: list(verification_scores(w.bench).values()),
    output:
        roc=report("results/report/verification/{bench}/roc.png", caption="../report/verification_roc.rst",
                   category="Verification", subcategory="{bench}", labels={"benchmark": "{bench}", "model": "all"}),
        histograms=[report(f"results/report/verification/{{bench}}/{m}_histogram.png",
                           caption="../report/verification_histogram.rst", category="Verification",
                           subcategory="{bench}", labels={"benchmark": "{bench}", "model": m})
                    for m in EVALUATED_MODELS],
    wildcard_constraints:
        bench=names_regex(VERIFICATION_BENCHMARKS),
    params:
        models=EVALUATED_MODELS,
    log:
        "results/logs/report_verification/{bench}.log",
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/report_verification.py"


rule report_separability:
    """Genuine/impostor cosine histograms of every synthetic dataset, and their ROC curves."""
    input:
        samples=expand("results/embeddings/samples/{dataset}.npz", dataset=config["datasets"]),
    output:
        roc=report("results/report/separability/roc.png", caption="../report/separability_roc.rst",
                   category="Identity separability", labels={"dataset": "all"}),
        histograms=[report(f"results/report/separability/{d}_histogram.png",
                           caption="../report/separability_histogram.rst", category="Identity separability",
                           labels={"dataset": d}) for d in config["datasets"]],
    params:
        settings=settings(seed=config["evaluation"]["seed"]),
        datasets=list(config["datasets"]),
    log:
        "results/logs/report_separability.log",
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/report_separability.py"


rule report_table:
    """A result table, rounded, as HTML for the report."""
    input:
        table=lambda w: report_tables()[w.table],
    output:
        html=report("results/report/tables/{table}.html", caption="../report/table.rst", category="Tables",
                    labels={"table": "{table}"}),
    wildcard_constraints:
        table=names_regex(report_tables()),
    log:
        "results/logs/report_table/{table}.log",
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/report_table.py"
