"""Fine-tune the truncated DDAE encoder of one checkpoint (paper Sec. 4.1, Table 7)."""

from ddae.finetune import finetune
from ddae.joblog import logging_to
from ddae.probing import resolve_layer_t
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    layer, t, steps = resolve_layer_t(sm.input.choice, sm.params.layer_t, sm.params.steps)
    finetune(
        checkpoint=sm.input.checkpoint,
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
