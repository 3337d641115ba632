"""Linear probe at the grid search's (or the configured) layer and t (paper Table 6)."""

from ddae.joblog import logging_to
from ddae.probing import layer_t_from_grid, linear_probe

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    steps = int(sm.params.steps)
    if sm.input.choice:  # [grid json]: use the grid search's best (layer, t)
        layer, t = layer_t_from_grid(sm.input.choice[0], steps)
    else:  # a fixed choice from the config, e.g. Table 9
        layer, t = int(sm.params.layer_t["layer"]), int(sm.params.layer_t["t"])
    linear_probe(
        checkpoint=sm.input.checkpoint,
        train_path=sm.input.train,
        test_path=sm.input.test,
        layer=layer,
        t=t,
        steps=steps,
        config=dict(sm.params.probe),
        out_json=sm.output.json,
        metrics_path=sm.output.metrics,
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
