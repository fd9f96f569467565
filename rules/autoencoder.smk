# The VQ-f4 autoencoder: LDM's ffhq256 first stage at paper scale (fetched), or a small one trained
# on the face world. Both are written as a Lightning checkpoint and split by the same rule.


if config["autoencoder"]["source"] == "train":

    rule train_autoencoder:
        """Train a small VQ-f4 autoencoder on the training faces (Lightning-checkpoint layout)."""
        input:
            images="results/data/ffhq",
        output:
            checkpoint="results/autoencoder/model.ckpt",
            losses="results/autoencoder/loss.csv",
        params:
            settings=expensive(model=config["autoencoder"]["model"], train=config["autoencoder"]["train"]),
            state="results/state/autoencoder",
            device=config["device"],
        log:
            "results/logs/train_autoencoder.log",
        benchmark:
            "results/benchmarks/train_autoencoder.tsv"
        threads: 8
        resources:
            gpu=1,
        conda:
            ENV
        script:
            "../workflow_scripts/train_autoencoder.py"

else:

    rule fetch_autoencoder:
        """Download (resumable) or copy LDM's ffhq.zip and extract its model.ckpt safely."""
        output:
            checkpoint="results/autoencoder/model.ckpt",
        params:
            settings=settings(ldm=config["autoencoder"]["ldm"]),
            state="results/state/ldm_download",
        log:
            "results/logs/fetch_autoencoder.log",
        benchmark:
            "results/benchmarks/fetch_autoencoder.tsv"
        threads: 1
        conda:
            ENV
        script:
            "../workflow_scripts/fetch_autoencoder.py"


rule split_autoencoder:
    """Split the Lightning checkpoint into the encoder and decoder files IDiff-Face loads."""
    input:
        checkpoint="results/autoencoder/model.ckpt",
    output:
        encoder="results/autoencoder/first_stage_encoder_state_dict.pt",
        decoder="results/autoencoder/first_stage_decoder_state_dict.pt",
    log:
        "results/logs/split_autoencoder.log",
    benchmark:
        "results/benchmarks/split_autoencoder.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/split_autoencoder.py"
