"""Table 5: network specifications, measured from the instantiated networks."""

from ddae.joblog import logging_to
from ddae.tables import write_table5

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_table5(sm.params.columns, sm.output.csv, sm.output.md)
