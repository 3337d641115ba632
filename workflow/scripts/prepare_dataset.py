"""Convert a dataset into the uniform format (train.npz / test.npz)."""

from pathlib import Path

from ddae.datasets.prepare import prepare_dataset
from ddae.joblog import logging_to

sm = snakemake  # noqa: F821 (injected by Snakemake)
with logging_to(sm.log[0]):
    prepare_dataset(
        sm.wildcards.dataset,
        sm.input.source[0] if sm.input.source else None,
        Path(sm.output.train).parent,
        resolution=sm.params.resolution,
    )
