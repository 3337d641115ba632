"""Download the official Tiny-ImageNet archive, md5-checked before it is renamed (local rule)."""

from ddae.data import download_tiny_imagenet
from ddae.joblog import logging_to

with logging_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    download_tiny_imagenet(snakemake.output[0])  # noqa: F821
