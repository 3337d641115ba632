"""Table 6: the training settings this pipeline used, beside the paper's."""

from ddae.joblog import logging_to
from ddae.report_settings import write_settings_table

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_settings_table("table6", sm.params.columns, sm.output.csv, sm.output.md)
