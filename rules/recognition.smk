# Face-recognition training on each experiment's synthetic dataset (and, on the face world, on the
# real labelled faces as the reference row).


rule train_fr:
    """Train an FR model (iresnet + CosFace) on one training set; keep the best-validation backbone."""
    input:
        images=fr_training_images,
    output:
        backbone="results/fr/{model}/backbone.pt",
        metrics="results/fr/{model}/metrics.csv",
    wildcard_constraints:
        model=names_regex(TRAINED_EXPERIMENTS + (["real_reference"] if WORLD else [])),
    params:
        settings=lambda w: fr_settings(w.model),
        state=lambda w: f"results/state/fr/{w.model}",
        device=config["device"],
    log:
        "results/logs/train_fr/{model}.log",
    benchmark:
        "results/benchmarks/train_fr/{model}.tsv"
    threads: 8
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/train_fr.py"
