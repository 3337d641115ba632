"""Noise-conditional WideResNet baseline under VP or VE perturbation (Figure 6)."""

from ddae.joblog import job_device, logging_to
from ddae.noise_conditional import train_noisy_wrn

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    train_noisy_wrn(
        perturbation=sm.params.perturbation,
        network=dict(sm.params.network),
        framework=dict(sm.params.framework),
        train_path=sm.input.train,
        test_path=sm.input.test,
        config=dict(sm.params.training),
        out_csv=sm.output[0],
        device=job_device(sm.resources.gpu),
        progress=False,
        steps=getattr(sm.params, "steps", None),
        metrics=sm.params.metrics,
        state_dir=sm.params.state_dir,
    )
