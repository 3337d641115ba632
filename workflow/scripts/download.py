"""Download one file (a localrule: a dataset's archive, clean-fid's Inception weights), verified
by checksum before it is renamed into place (ddae.downloads.download_verified)."""

from ddae.downloads import download_verified
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    download_verified(sm.params.url, sm.output[0], sm.params.checksum)
