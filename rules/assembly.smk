# Assembly: exactly W identities x D images in ImageFolder layout, from the aligned shards or a
# published dataset's images.


rule import_released_dataset:
    """Split a published dataset's identity blocks (or read its identity folders) into <identity>/<k>.png."""
    input:
        folder=lambda w: config["datasets"][w.dataset]["released"]["folder"],
    output:
        images=directory("results/released/{dataset}"),
        manifest="results/released/{dataset}.csv",
    wildcard_constraints:
        dataset=names_regex(RELEASED_DATASETS),
    params:
        # whether the images are aligned afterwards does not change them
        settings=lambda w: settings(released={k: v for k, v in config["datasets"][w.dataset]["released"].items()
                                              if k != "align"}),
    log:
        "results/logs/import_released_dataset/{dataset}.log",
    benchmark:
        "results/benchmarks/import_released_dataset/{dataset}.tsv"
    threads: 8
    conda:
        ENV
    script:
        "../workflow_scripts/import_released_dataset.py"


rule assemble_dataset:
    """Keep identities with enough aligned images (oversampled ones fill the gaps)."""
    input:
        unpack(assembly_inputs),
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
