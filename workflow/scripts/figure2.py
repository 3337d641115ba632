"""Figure 2: grid-search linear-probe accuracy over layer x timestep."""

from ddae.figures import figure2
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    figure2(
        sm.params.grids,
        sm.output.png,
        sm.output.pdf,
        paper=sm.params.get("paper"),
        source=sm.params.get("source"),
    )
