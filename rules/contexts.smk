# Identity contexts: synthetic_uniform (no inputs), two_stage (unconditional LDM + embedder),
# real (a subset of real embeddings).


def context_inputs(w):
    spec = config["contexts"][w.contexts]
    if spec["kind"] == "two_stage":
        return {"generator": f"results/ldm/{spec['generator']}/ema.ckpt",
                "decoder": "results/autoencoder/first_stage_decoder_state_dict.pt",
                "backbone": "results/embedder/backbone.pt"}
    if spec["kind"] == "real":
        return {"embeddings": f"results/embeddings/{spec['source']}.npz"}
    return {}


def context_settings(name):
    spec = config["contexts"][name]
    subtrees = {"contexts": spec}
    if spec["kind"] == "two_stage":
        subtrees.update(generator=generator_settings(spec["generator"])["unet"],
                        autoencoder=config["autoencoder"]["model"], embedder=config["embedder"]["model"],
                        sampler=config["sampling"]["sampler"], image_size=image_size())
    return settings(**subtrees)


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
    threads: workflow.cores
    resources:
        gpu=lambda w: int(config["contexts"][w.contexts]["kind"] == "two_stage"),
    conda:
        ENV
    script:
        "../workflow_scripts/make_contexts.py"
