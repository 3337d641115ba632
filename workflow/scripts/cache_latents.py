"""Encode K augmented training versions and the test split with the SD VAE (paper App. A)."""

from ddae.joblog import job_device, logging_to
from ddae.latents import cache_latents

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    cache_latents(
        vae_dir=sm.input.vae,
        train_path=sm.input.train,
        test_path=sm.input.test,
        config=dict(sm.params.latents),
        out_dir=sm.output[0],
        device=job_device(sm.resources.gpu),
    )
