"""Cache one timestep's all-layer features of a checkpoint, probe every layer on them, delete
the cache (paper Sec. 3.2, Appendix B)."""

from ddae.grid_timesteps import probe_timestep
from ddae.joblog import job_device, logging_to
from ddae.sources import open_source

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    probe_timestep(
        checkpoint=sm.input.checkpoint,
        source=open_source(sm.input),
        t=int(sm.params.t),
        steps=int(sm.params.steps),
        features_config=dict(sm.params.features),
        probe_config=dict(sm.params.probe),
        cache_dir=sm.params.cache_dir,
        out_json=sm.output[0],
        device=job_device(sm.resources.gpu),
    )
