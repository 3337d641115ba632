"""Train the supervised WideResNet-28-10 baseline from scratch (paper Table 8)."""

from ddae.finetune import train_supervised_wrn
from ddae.joblog import logging_to
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    train_supervised_wrn(
        network=dict(sm.params.network),
        source=open_source(sm.input),
        config=dict(sm.params.training),
        out_json=sm.output.json,
        metrics_path=sm.output.metrics,
        state_dir=sm.params.state_dir,
        processes=max(int(sm.resources.gpu), 1),
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
