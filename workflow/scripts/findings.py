"""The paper's qualitative findings checked on the pipeline's own result files."""

from ddae.findings import findings
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    findings(
        models=[dict(model) for model in sm.params.models],
        thresholds=dict(sm.params.thresholds),
        scale=sm.params.scale,
        out_json=sm.output.json,
        out_md=sm.output.md,
    )
