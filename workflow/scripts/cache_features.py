"""Cache all-layer features of one checkpoint at one timestep, of images or a DiT's latents
(paper Sec. 3.2, Sec. 4.2, Appendix B)."""

from ddae.features import cache_features
from ddae.joblog import logging_to
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    cache_features(
        checkpoint=sm.input.checkpoint,
        source=open_source(sm.input),
        t=int(sm.params.t),
        steps=int(sm.params.steps),
        config=dict(sm.params.features),
        out_dir=sm.output[0],
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
