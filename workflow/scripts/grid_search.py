"""The (layer, t) grid of one checkpoint from its per-timestep probes (paper Appendix B)."""

from ddae.grid_timesteps import merge_timesteps
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    merge_timesteps(
        timestep_files=list(sm.input.timesteps),
        config=dict(sm.params.probe),
        out_csv=sm.output.csv,
        out_json=sm.output.json,
    )
