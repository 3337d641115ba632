"""Write a randomly initialised stand-in for an official checkpoint (CPU smoke run only)."""

from ddae.joblog import logging_to
from ddae.official.stand_ins import write_stand_in

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_stand_in(
        sm.params.kind, sm.output[0], dict(sm.params.get("spec") or {}), int(sm.params.seed)
    )
