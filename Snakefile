# IDiff-Face end to end: data -> embeddings -> autoencoder -> LDM -> contexts -> samples ->
# alignment -> datasets -> face recognition -> evaluation. See README.md.
#
#   snakemake --cores all results/eval/lfw.csv                                 # embedded default
#   snakemake --cores all --configfile config/paper.yaml results/eval/lfw.csv  # paper scale
#   snakemake --cores all --directory rehearsal results/eval/lfw.csv \
#       --configfile config/paper.yaml config/rehearsal.yaml                     # paper shapes, tiny data

from pathlib import Path

from idiff_core.config import load_schema, validate_config, with_replicates

# The embedded default, always read from the repository (also under --directory); --configfile
# files are merged over it key by key.
configfile: Path(workflow.basedir) / "config" / "config.yaml"

validate_config(config, load_schema(Path(workflow.basedir) / "config" / "schema.yaml"))
# Replicates 1 .. N-1 of every experiment's chain, as experiments, datasets, contexts and generators
# of their own (names `<name>_rep<r>`, every seed of the chain + r)
config.update(with_replicates(config))

# A paper run lists every missing or malformed file the user provides before any job starts (not
# again inside each cluster job).
if config["data"]["source"] == "paper" and workflow.is_main_process:
    from idiff_core.preflight import check_paper_inputs

    check_paper_inputs(config)

# One image for every rule when config `container` names one (run with
# --software-deployment-method apptainer); null leaves the rules without a container.
if config["container"]:

    container: config["container"]

report: "report/workflow.rst"


include: "rules/common.smk"


wildcard_constraints:
    generator=names_regex(config["generators"]),
    contexts=names_regex(config["contexts"]),
    dataset=names_regex(config["datasets"]),
    experiment=names_regex(EXPERIMENTS),
    model=names_regex(list(EXPERIMENTS) + REFERENCE_MODELS),
    shard=r"\d+",


include: "rules/data.smk"
include: "rules/embedder.smk"
include: "rules/autoencoder.smk"
include: "rules/ldm.smk"
include: "rules/contexts.smk"
include: "rules/sampling.smk"
include: "rules/alignment.smk"
include: "rules/assembly.smk"
include: "rules/recognition.smk"
include: "rules/evaluation.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        "results/eval/lfw.csv",
        "results/eval/lfw_summary.csv",
        expand("results/eval/{table}.csv", table=QUALITY_TABLES),
        ["results/eval/benchmarks.csv"] if BENCHMARKS else [],
        expand("results/eval/lfw_contexts/{generator}.csv", generator=CONDITIONAL_GENERATORS),
        report_figures(),
