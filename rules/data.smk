# Data acquisition. The embedded default renders the face world offline; the paper configuration
# fetches FFHQ and LFW (or reads local copies). Either way the same files appear:
#   results/data/ffhq/            training faces, flat, 5-digit stems (unlabelled)
#   results/data/lfw/images/      the LFW(-like) benchmark in LFW's layout, + results/data/lfw/pairs.txt
#   results/data/labelled/        (face world only) labelled faces for the stand-in embedder


if WORLD:

    rule render_world:
        """Render one of the face world's three disjoint-identity sets."""
        output:
            images=directory("results/data/{world_set}"),
        wildcard_constraints:
            world_set="ffhq|labelled",
        params:
            settings=lambda w: settings(world=world_set_config(config["data"]["world"], w.world_set), kind=w.world_set),
        log:
            "results/logs/render_world/{world_set}.log",
        benchmark:
            "results/benchmarks/render_world/{world_set}.tsv"
        threads: 8
        conda:
            ENV
        script:
            "../workflow_scripts/render_world.py"

    rule render_world_lfw:
        """Render the face world's LFW-like benchmark: LFW's folder layout and a 10-fold pairs.txt."""
        output:
            images=directory("results/data/lfw/images"),
            pairs="results/data/lfw/pairs.txt",
        params:
            settings=settings(world=world_set_config(config["data"]["world"], "lfw"), kind="lfw"),
        log:
            "results/logs/render_world/lfw.log",
        benchmark:
            "results/benchmarks/render_world/lfw.tsv"
        threads: 8
        conda:
            ENV
        script:
            "../workflow_scripts/render_world.py"

else:

    rule fetch_ffhq:
        """FFHQ's 70,000 faces at 128x128 from a local folder/archive or its published metadata."""
        output:
            images=directory("results/data/ffhq"),
            manifest="results/data/ffhq_manifest.csv",
        params:
            settings=settings(ffhq=config["data"]["ffhq"]),
            state="results/state/ffhq_download",
        log:
            "results/logs/fetch_ffhq.log",
        benchmark:
            "results/benchmarks/fetch_ffhq.tsv"
        threads: 4
        conda:
            ENV
        script:
            "../workflow_scripts/fetch_ffhq.py"

    rule fetch_lfw:
        """LFW's images and pairs.txt from its official archives (checksummed) or a local folder."""
        output:
            images=directory("results/data/lfw/images"),
            pairs="results/data/lfw/pairs.txt",
        params:
            settings=settings(lfw=config["data"]["lfw"]),
            state="results/state/lfw_download",
        log:
            "results/logs/fetch_lfw.log",
        benchmark:
            "results/benchmarks/fetch_lfw.tsv"
        threads: 1
        conda:
            ENV
        script:
            "../workflow_scripts/fetch_lfw.py"
