"""Table 9: the layer-noise pairs our grid search found, beside the paper's."""

from ddae.joblog import logging_to
from ddae.report import write_table9

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_table9(sm.params.columns, sm.output.csv, sm.output.md)
