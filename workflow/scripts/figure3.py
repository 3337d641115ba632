"""Figure 3: uniformity vs alignment per decoder layer over training checkpoints."""

from ddae.figures import figure3
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    figure3(
        sm.params.series,
        sm.output.png,
        sm.output.pdf,
        layers=sm.params.get("layers"),
        source=sm.params.get("source"),
    )
