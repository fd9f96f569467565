# MTCNN alignment onto the ArcFace 112x112 template: every sample shard, the benchmark, and (face
# world) the labelled real faces the reference FR model trains on.


rule align_shard:
    """Align one shard of samples, or a released dataset's images (the failure policy is applied per
    image and recorded)."""
    input:
        images=shard_images,
    output:
        images=directory("results/aligned/{dataset}/shard{shard}"),
        manifest="results/aligned/{dataset}/shard{shard}.csv",
    params:
        settings=settings(alignment=config["alignment"]),
        state=lambda w: f"results/state/aligned/{w.dataset}/shard{w.shard}",
        device=config["device"],
    log:
        "results/logs/align_shard/{dataset}/shard{shard}.log",
    benchmark:
        "results/benchmarks/align_shard/{dataset}/shard{shard}.tsv"
    threads: 8
    conda:
        ENV
    script:
        "../workflow_scripts/align.py"


rule align_real:
    """Align a set of real faces (the benchmark's images its pairs name, or the part of the face
    world's labelled set the real reference trains and validates on)."""
    input:
        unpack(aligned_real_inputs),
    output:
        images=directory("results/aligned/real/{imageset}"),
        manifest="results/aligned/real/{imageset}.csv",
    wildcard_constraints:
        imageset="lfw|labelled",
    params:
        settings=lambda w: settings(alignment=config["alignment"], subset=aligned_subset(w.imageset)),
        state=lambda w: f"results/state/aligned/real/{w.imageset}",
        device=config["device"],
    log:
        "results/logs/align_real/{imageset}.log",
    benchmark:
        "results/benchmarks/align_real/{imageset}.tsv"
    threads: 8
    conda:
        ENV
    script:
        "../workflow_scripts/align.py"
