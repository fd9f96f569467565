"""IDiff-Face as a library: every stage of the workflow, callable without Snakemake.

The workflow's rules are thin wrappers over the functions in this package; nothing here imports
Snakemake, so every stage is testable and usable from plain Python.
"""

__version__ = "0.1.0"
