"""Train one classifier: the fine-tuned or from-scratch truncated encoder, or the WideResNet
(paper Sec. 4.1, Tables 7-8, Figure 5); rules finetune, scratch and supervised_wrn."""

from ddae.finetune import classifier_stage
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    classifier_stage(
        model=dict(sm.params.model),
        inputs=sm.input,
        layer_t=sm.params.layer_t,
        steps=sm.params.steps,
        config=dict(sm.params.training),
        out_json=sm.output.json,
        metrics_path=sm.output.metrics,
        state_dir=sm.params.state_dir,
        gpus=int(sm.resources.gpu),
    )
