"""Figure 5: FID vs linear / fine-tune / scratch accuracy, WideResNet reference line."""

from ddae.figures import figure5
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    figure5(sm.params.panels, sm.output.png, sm.output.pdf, source=sm.params.get("source"))
