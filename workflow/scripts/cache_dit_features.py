"""Cache all-block DiT features of cached latents at one timestep (paper Sec. 4.2, App. B)."""

from ddae.joblog import logging_to
from ddae.latents import cache_dit_features

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    cache_dit_features(
        checkpoint=sm.input.checkpoint,
        latent_dir=sm.input.latents,
        t=int(sm.params.t),
        steps=int(sm.params.steps),
        config=dict(sm.params.features),
        out_dir=sm.output[0],
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
