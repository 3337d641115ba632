"""Download CIFAR-10 with torchvision's md5-checked downloader (local rule)."""

from pathlib import Path

from ddae.data import download_cifar10
from ddae.joblog import logging_to

with logging_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected)
    download_cifar10(Path(snakemake.output[0]).parent)  # noqa: F821
