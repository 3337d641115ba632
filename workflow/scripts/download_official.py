"""Download an official checkpoint (a localrule): DDPM/SD-VAE diffusers folders, EDM pickle, DiT.

Paper Appendix A; checksums verified before renaming where published (see ddae.official.sources).
"""

from ddae.joblog import logging_to
from ddae.official.sources import download_official

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    download_official(
        sm.params.kind,
        sm.output[0],
        url=sm.params.get("url"),
        checksum=sm.params.get("checksum"),
    )
