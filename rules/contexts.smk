# Identity contexts: synthetic_uniform (no inputs), two_stage (unconditional LDM + embedder),
# real (a subset of real embeddings).


rule make_contexts:
    """One context set: ids + L2-normalised 512-d vectors, seed and source recorded."""
    input:
        unpack(context_inputs),
    output:
        contexts="results/contexts/{contexts}.npz",
    params:
        settings=lambda w: context_settings(w.contexts),
        device=config["device"],
    log:
        "results/logs/make_contexts/{contexts}.log",
    benchmark:
        "results/benchmarks/make_contexts/{contexts}.tsv"
    threads: 8
    resources:
        gpu=lambda w: int(config["contexts"][w.contexts]["kind"] == "two_stage"),
    conda:
        ENV
    script:
        "../workflow_scripts/make_contexts.py"
