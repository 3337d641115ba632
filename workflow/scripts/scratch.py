"""Train the truncated DDAE encoder from scratch (paper Table 8, Figure 5 "Scratch")."""

from ddae.finetune import train_from_scratch
from ddae.joblog import logging_to
from ddae.probing import resolve_layer_t
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    layer, t, steps = resolve_layer_t(sm.input.choice, sm.params.layer_t, sm.params.steps)
    train_from_scratch(
        run=dict(sm.params.run),
        source=open_source(sm.input),
        layer=layer,
        t=t,
        steps=steps,
        config=dict(sm.params.training),
        out_json=sm.output.json,
        metrics_path=sm.output.metrics,
        state_dir=sm.params.state_dir,
        processes=max(int(sm.resources.gpu), 1),
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
