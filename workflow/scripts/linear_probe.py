"""Linear probe at the grid search's, the configured or a named (layer, t) (paper Table 6)."""

from ddae.joblog import job_device, logging_to
from ddae.layer_choice import resolve_layer_t
from ddae.probe_pairs import probe_or_reuse
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    # [grid json]: the grid search's best (layer, t); else the config's (e.g. Table 9) or, for
    # linear_probe_at_pair, the pair its path names
    layer, t, steps = resolve_layer_t(sm.input.choice, sm.params.layer_t, sm.params.steps)
    # the run's own probe and a named-pair probe at the same pair are one computation
    probe_or_reuse(
        checkpoint=sm.input.checkpoint,
        source=open_source(sm.input),
        layer=layer,
        t=t,
        steps=steps,
        config=dict(sm.params.probe),
        out_json=sm.output.json,
        metrics_path=sm.output.metrics,
        device=job_device(sm.resources.gpu),
    )
