"""The validation report: the paper's headline numbers, PASS/FAIL per number (issue 24)."""

from ddae.joblog import logging_to
from ddae.validation import write_validation

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    write_validation(
        plan=list(sm.params.plan),
        results=dict(sm.input.items()),
        benchmarks=dict(sm.params.benchmarks),
        out_md=sm.output.md,
        out_json=sm.output.json,
    )
