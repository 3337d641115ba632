"""Linear probe at the grid search's, the configured or a named (layer, t) (paper Table 6)."""

from ddae.joblog import logging_to
from ddae.probe_pairs import probe_identity, reuse_probe, sibling_probe
from ddae.probing import linear_probe, resolve_layer_t
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    # [grid json]: the grid search's best (layer, t); else the config's (e.g. Table 9) or, for
    # linear_probe_at_pair, the pair its path names
    layer, t, steps = resolve_layer_t(sm.input.choice, sm.params.layer_t, sm.params.steps)
    device = "cuda" if int(sm.resources.gpu) > 0 else "cpu"
    source = open_source(sm.input)
    identity = probe_identity(
        sm.input.checkpoint, source.record(), layer, t, steps, dict(sm.params.probe), device
    )
    # the run's own probe and a named-pair probe at the same pair are one computation
    if not reuse_probe(sm.output.json, sibling_probe(sm.output.json, layer, t), identity):
        linear_probe(
            checkpoint=sm.input.checkpoint,
            source=source,
            layer=layer,
            t=t,
            steps=steps,
            config=dict(sm.params.probe),
            out_json=sm.output.json,
            metrics_path=sm.output.metrics,
            device=device,
        )
