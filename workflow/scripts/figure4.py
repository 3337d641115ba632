"""Figure 4: FID vs linear-probe accuracy of the DDPM noise ablations."""

from ddae.figures import figure4
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    figure4(sm.params.series, sm.output.png, sm.output.pdf, source=sm.params.get("source"))
