"""One of the paper's tables or figures, by its rule's name (ddae.report.registry)."""

from ddae.joblog import logging_to
from ddae.report.registry import write_report

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_report(sm.rule, dict(sm.params.items()), dict(sm.output.items()))
