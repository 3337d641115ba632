"""Figure 6: noise-conditional classifiers' accuracy over noise levels (VP and VE)."""

from ddae.figures import figure6
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    figure6(sm.params.panels, sm.output.png, sm.output.pdf, source=sm.params.get("source"))
