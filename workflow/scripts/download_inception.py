"""Download clean-fid's Inception weights (a localrule), verified by checksum before renaming."""

from ddae.feature_extractors import download_inception
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    download_inception(sm.output[0], url=sm.params.url, checksum=sm.params.checksum)
