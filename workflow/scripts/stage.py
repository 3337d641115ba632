"""A registered stage's job (`ddae.stage_runner`): its runner on one checkpoint."""

from ddae.joblog import job_device, logging_to
from ddae.stage_runner import run_stage

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    inputs = dict(sm.input.items())
    run_stage(
        sm.params.stage,
        checkpoint=inputs.pop("checkpoint"),
        choice=inputs.pop("choice", []),
        sources=inputs,
        config=sm.params.config,
        layer_t=sm.params.layer_t,
        steps=sm.params.steps,
        output=sm.output[0],
        device=job_device(sm.resources.gpu),
    )
