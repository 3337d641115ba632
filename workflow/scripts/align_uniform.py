"""Alignment and uniformity of every decoder layer at the run's chosen t (paper Sec. 3.3)."""

from ddae.alignment import align_uniform
from ddae.joblog import job_device, logging_to
from ddae.layer_choice import resolve_layer_t

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    # [grid json]: the grid search's best t; else the config's, e.g. Table 9
    _, t, steps = resolve_layer_t(sm.input.get("choice"), sm.params.layer_t, sm.params.steps)
    align_uniform(
        checkpoint=sm.input.checkpoint,
        train_path=sm.input.train,
        t=t,
        steps=steps,
        config=dict(sm.params.config),
        out_csv=sm.output[0],
        device=job_device(sm.resources.gpu),
        progress=False,
    )
