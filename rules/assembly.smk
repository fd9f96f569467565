# Assembly: exactly W identities x D images in ImageFolder layout, from the aligned shards.


rule assemble_dataset:
    """Keep identities with enough aligned images (oversampled ones fill the gaps)."""
    input:
        images=lambda w: expand("results/aligned/{dataset}/shard{shard}", dataset=w.dataset, shard=SHARDS),
        manifests=lambda w: expand("results/aligned/{dataset}/shard{shard}.csv", dataset=w.dataset, shard=SHARDS),
    output:
        images=directory("results/datasets/{dataset}"),
        manifest="results/datasets/{dataset}.csv",
        summary="results/datasets/{dataset}_summary.json",
    params:
        settings=lambda w: settings(identities=config["datasets"][w.dataset]["identities"],
                                    images_per_identity=config["datasets"][w.dataset]["images_per_identity"]),
    log:
        "results/logs/assemble_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/assemble_dataset/{dataset}.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/assemble_dataset.py"
