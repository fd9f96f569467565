# The identity embedder: ElasticFace-Arc iresnet100 at paper scale (weights provided by the user),
# at the embedded default a small iresnet trained here on the face world's labelled faces.
# Either way it ends up at results/embedder/backbone.pt, and extraction runs unchanged.


if config["embedder"]["source"] == "train":

    rule train_embedder:
        """Train the stand-in embedder with the FR training code on the labelled face-world set."""
        input:
            images="results/data/labelled",
        output:
            backbone="results/embedder/backbone.pt",
            metrics="results/embedder/metrics.csv",
        params:
            settings=expensive(fr={**config["embedder"]["train"], **config["embedder"]["model"]}),
            state="results/state/embedder",
            device=config["device"],
        log:
            "results/logs/train_embedder.log",
        benchmark:
            "results/benchmarks/train_embedder.tsv"
        threads: 8
        resources:
            gpu=1,
        conda:
            ENV
        script:
            "../workflow_scripts/train_fr.py"

else:

    rule import_embedder:
        """Check the user's ElasticFace weights (keys and shapes) and keep a verified copy."""
        output:
            backbone="results/embedder/backbone.pt",
        params:
            settings=settings(weights=config["embedder"]["weights"], model=config["embedder"]["model"]),
        log:
            "results/logs/import_embedder.log",
        benchmark:
            "results/benchmarks/import_embedder.tsv"
        threads: 1
        conda:
            ENV
        script:
            "../workflow_scripts/import_embedder.py"


RELEASED_EMBEDDINGS = config["embedder"]["training_embeddings"]


if RELEASED_EMBEDDINGS:

    rule import_embeddings:
        """The training faces' embeddings from a released file (IDiff-Face's embeddings_elasticface_128.npy)."""
        input:
            images=EMBEDDED_IMAGES["ffhq"],
            vectors=RELEASED_EMBEDDINGS,
        output:
            embeddings="results/embeddings/ffhq.npz",
            manifest="results/embeddings/ffhq.csv",
        params:
            settings=settings(dim=config["embedder"]["model"]["num_features"]),
        log:
            "results/logs/import_embeddings.log",
        benchmark:
            "results/benchmarks/import_embeddings.tsv"
        threads: 1
        conda:
            ENV
        script:
            "../workflow_scripts/import_embeddings.py"


rule extract_embeddings:
    """One L2-normalised 512-d embedding per image (whole image resized to 112), in one .npz."""
    input:
        images=lambda w: EMBEDDED_IMAGES[w.imageset],
        backbone="results/embedder/backbone.pt",
    output:
        embeddings="results/embeddings/{imageset}.npz",
        manifest="results/embeddings/{imageset}.csv",
    wildcard_constraints:
        imageset="lfw" if RELEASED_EMBEDDINGS else "ffhq|lfw",
    params:
        settings=expensive(model=config["embedder"]["model"], extract=config["embedder"]["extract"]),
        device=config["device"],
    log:
        "results/logs/extract_embeddings/{imageset}.log",
    benchmark:
        "results/benchmarks/extract_embeddings/{imageset}.tsv"
    threads: 8
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/extract_embeddings.py"
