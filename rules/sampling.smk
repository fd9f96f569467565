# Sampling: one job per shard; shards partition the identities, never change the images.


rule sample_shard:
    """Sample images_per_identity images for every identity of one shard (one PNG per image)."""
    input:
        generator=lambda w: f"results/ldm/{config['datasets'][w.dataset]['generator']}/ema.ckpt",
        decoder="results/autoencoder/first_stage_decoder_state_dict.pt",
        contexts=lambda w: f"results/contexts/{config['datasets'][w.dataset]['contexts']}.npz",
    output:
        images=directory("results/samples/{dataset}/shard{shard}"),
        manifest="results/samples/{dataset}/shard{shard}.csv",
    params:
        settings=lambda w: sampling_settings(w.dataset),
        state=lambda w: f"results/state/samples/{w.dataset}/shard{w.shard}",
        device=config["device"],
    log:
        "results/logs/sample_shard/{dataset}/shard{shard}.log",
    benchmark:
        "results/benchmarks/sample_shard/{dataset}/shard{shard}.tsv"
    wildcard_constraints:
        dataset=names_regex(SAMPLED_DATASETS),
    threads: 8
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/sample_shard.py"
