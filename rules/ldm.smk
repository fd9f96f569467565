# The identity-conditioned latent diffusion models (and the unconditional one for two-stage
# contexts): trained here, or a published IDiff-Face EMA checkpoint imported for sampling.


rule encode_latents:
    """Encode the training faces and their mirror images once with the frozen VQ encoder (~80 GFLOP per
    image at paper shape): every generator's train_ldm reads this one file."""
    input:
        images="results/data/ffhq",
        encoder="results/autoencoder/first_stage_encoder_state_dict.pt",
    output:
        latents="results/latents/ffhq.pt",
    params:
        settings=expensive(autoencoder=config["autoencoder"]["model"],
                           encode_batch_size=config["ldm"]["training"]["encode_batch_size"]),
        device=config["device"],
    log:
        "results/logs/encode_latents.log",
    benchmark:
        "results/benchmarks/encode_latents.tsv"
    threads: 8
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/encode_latents.py"


rule train_ldm:
    """Train one generator on the training latents (EMA weights are what sampling uses)."""
    input:
        unpack(ldm_training_inputs),
    output:
        ema="results/ldm/{generator}/ema.ckpt",
        model="results/ldm/{generator}/model.ckpt",
        losses="results/ldm/{generator}/loss.csv",
        previews=directory("results/ldm/{generator}/previews"),
        kept=directory("results/ldm/{generator}/kept"),
    wildcard_constraints:
        generator=names_regex(TRAINED_GENERATORS),
    params:
        settings=lambda w: expensive(ldm={**generator_ldm(config, w.generator), "autoencoder": config["autoencoder"]["model"]}),
        state=lambda w: f"results/state/ldm/{w.generator}",
        device=config["device"],
    log:
        "results/logs/train_ldm/{generator}.log",
    benchmark:
        "results/benchmarks/train_ldm/{generator}.tsv"
    threads: 8
    resources:
        gpu=1,
    conda:
        ENV
    script:
        "../workflow_scripts/train_ldm.py"


rule import_generator:
    """Check a published IDiff-Face generator (a released model folder or a checkpoint file) against the
    configured one and keep its weights in the released DDPM layout."""
    output:
        ema="results/ldm/{generator}/ema.ckpt",
    wildcard_constraints:
        generator=names_regex(PUBLISHED_GENERATORS),
    params:
        settings=lambda w: settings(release=generator_release(config, w.generator),
                                    unet=generator_unet(config, w.generator), diffusion=config["ldm"]["diffusion"],
                                    image_size=image_size(config)),
    log:
        "results/logs/import_generator/{generator}.log",
    benchmark:
        "results/benchmarks/import_generator/{generator}.tsv"
    threads: 1
    conda:
        ENV
    script:
        "../workflow_scripts/import_generator.py"
