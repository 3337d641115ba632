"""Linear-probe every (layer, t) of one checkpoint's cached features (paper Appendix B)."""

from ddae.joblog import logging_to
from ddae.probing import grid_search

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    grid_search(
        feature_dirs=list(sm.input.features),
        config=dict(sm.params.probe),
        out_csv=sm.output.csv,
        out_json=sm.output.json,
        device="cuda" if int(sm.resources.gpu) > 0 else "cpu",
    )
