"""The workflow's planning layer (issue 21): what each stage is, where its result files lie and
what they must contain, read by the Snakefile while it plans. Imports no torch, numpy or pandas:
every Snakemake process, cluster jobs included, parses the workflow through this package."""
