"""Linear probe at the grid search's (or the configured) layer and t (paper Table 6)."""

from ddae.joblog import logging_to
from ddae.probing import linear_probe, resolve_layer_t
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    # [grid json]: the grid search's best (layer, t); else the config's, e.g. Table 9
    layer, t, steps = resolve_layer_t(sm.input.choice, sm.params.layer_t, sm.params.steps)
    linear_probe(
        checkpoint=sm.input.checkpoint,
        source=open_source(sm.input),
        layer=layer,
        t=t,
        steps=steps,
        config=dict(sm.params.probe),
        out_json=sm.output.json,
        metrics_path=sm.output.metrics,
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
