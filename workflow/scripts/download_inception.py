"""Download clean-fid's Inception weights (a localrule), verified by checksum before renaming."""

from ddae.downloads import download_verified
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    download_verified(sm.params.url, sm.output[0], sm.params.checksum)
