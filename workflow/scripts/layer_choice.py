"""Label-free layer choice (Sec. 3.3): alignment/uniformity's pick beside the grid search's."""

from ddae.joblog import logging_to
from ddae.report import write_label_free_table

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_label_free_table(sm.params.runs, sm.output.csv, sm.output.md)
