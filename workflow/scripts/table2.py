"""Table 2: ours beside the paper's values (other methods as reported by the paper)."""

from ddae.joblog import logging_to
from ddae.report import write_comparison_table

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_comparison_table("table2", sm.params.results, sm.output.csv, sm.output.md)
