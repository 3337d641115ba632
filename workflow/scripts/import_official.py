"""Convert a downloaded official checkpoint into a ddae checkpoint (paper Appendix A)."""

from ddae.joblog import logging_to
from ddae.official.importers import import_official

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    import_official(
        sm.params.kind,
        sm.input.source,
        sm.output[0],
        epoch=int(sm.params.epoch),
        url=sm.params.get("url"),
        network=sm.params.get("network"),
        expected=sm.params.get("expected"),
    )
