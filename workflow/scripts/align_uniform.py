"""Alignment and uniformity of every decoder layer at the run's chosen t (paper Sec. 3.3)."""

from ddae.alignment import align_uniform
from ddae.joblog import logging_to
from ddae.probing import layer_t_from_grid

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    steps = int(sm.params.steps)
    if sm.input.get("choice"):  # [grid json]: the grid search's best t
        _, t = layer_t_from_grid(sm.input.choice[0], steps)
    else:  # a fixed choice from the config, e.g. Table 9
        t = int(sm.params.layer_t["t"])
    align_uniform(
        checkpoint=sm.input.checkpoint,
        train_path=sm.input.train,
        t=t,
        steps=steps,
        config=dict(sm.params.config),
        out_csv=sm.output[0],
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
        progress=False,
    )
