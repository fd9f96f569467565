#!/bin/sh
# Entry point of the workflow image: `snakemake ...` runs the installed workflow
# (/opt/idiff-workflow/Snakefile, its config and default profile) in the working directory, where
# the host's project folder is mounted; any other command runs as given.
set -e
if [ "$1" = "snakemake" ]; then
    shift
    exec snakemake --snakefile /opt/idiff-workflow/Snakefile "$@"
fi
exec "$@"
