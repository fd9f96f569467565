# The workflow's software in one image: CUDA PyTorch, this package with its runtime dependencies,
# and Snakemake. No data, weights or results are baked in: they live in the project folder that is
# mounted at /work.
#
#   docker build -t idiff-workflow .
#   docker run --rm --gpus all -v "$PWD:/work" idiff-workflow snakemake --cores all
#
# The same image runs every rule under `--software-deployment-method apptainer` when the config
# key `container` names it (see README, "Containers").
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg

# The base image's torch and torchvision satisfy pyproject's ranges, so pip keeps them.
WORKDIR /opt/idiff-workflow
COPY . .
RUN pip install . && snakemake --version

WORKDIR /work
ENTRYPOINT ["/opt/idiff-workflow/docker/entrypoint.sh"]
CMD ["snakemake", "--cores", "all"]
