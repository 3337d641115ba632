"""Noise-conditional MLP head on frozen DDAE features, accuracy per noise level (Figure 6)."""

from ddae.joblog import job_device, logging_to
from ddae.layer_choice import resolve_layer_t
from ddae.noise_conditional import train_noisy_head

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    # [grid json]: the grid search's best layer; else the config's, e.g. Table 9 (the pair's t
    # is not used: the head trains on random t and is tested level by level, Eq. 5)
    layer, _, steps = resolve_layer_t(sm.input.choice, sm.params.layer_t, sm.params.steps)
    train_noisy_head(
        checkpoint=sm.input.checkpoint,
        train_path=sm.input.train,
        test_path=sm.input.test,
        layer=layer,
        steps=steps,
        config=dict(sm.params.head),
        out_csv=sm.output[0],
        device=job_device(sm.resources.gpu),
        progress=False,
        metrics=sm.params.metrics,
        state_dir=sm.params.state_dir,
    )
