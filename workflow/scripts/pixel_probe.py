"""A linear probe on raw pixels with a run's grid-probe protocol (ddae.findings reference)."""

from ddae.joblog import logging_to
from ddae.probing.pixel_probe import pixel_probe

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    pixel_probe(sm.input.train, sm.input.test, dict(sm.params.probe), sm.output[0])
