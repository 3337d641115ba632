"""The one-off conversion of a registered dataset into the uniform format (Snakemake rule
``prepare_dataset``; paper Sec. 4's datasets): its reader (`ddae.datasets.registry`) reads the
downloaded file, or makes the bundled data at the configured resolution, and each split is
written as ``<out_dir>/<split>.npz`` (`ddae.datasets.format`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ddae.datasets.format import SPLITS, DatasetError, ImageDataset, split_path
from ddae.datasets.registry import entry

log = logging.getLogger(__name__)


def read_dataset(name: str, source: str | Path | None, resolution: int) -> dict[str, ImageDataset]:
    """The {"train", "test"} splits of registered dataset ``name`` at ``resolution`` pixels.

    A downloaded dataset is read from ``source`` and must already have that resolution (32 for
    CIFAR-10, 64 for Tiny-ImageNet); a bundled one (``source`` None) is made at it. The class
    count must be the registered one.
    """
    dataset = entry(name)
    if dataset.download is None:
        if source is not None:
            raise ValueError(f"dataset {name!r} is bundled (no download); pass source=None")
        splits = dataset.read_function()(resolution)
    else:
        if source is None:
            raise ValueError(f"dataset {name!r} needs a source path")
        splits = dataset.read_function()(Path(source))
        native = splits["train"].images.shape[-1]
        if resolution != native:
            raise DatasetError(
                f"dataset {name!r} is {native}x{native} pixels, config asks for {resolution}"
            )
    for split in SPLITS:
        if len(splits[split].classes) != dataset.classes:
            raise DatasetError(
                f"dataset {name!r}: {source} gives {len(splits[split].classes)} classes in "
                f"{split}, the registry says {dataset.classes}"
            )
    return splits


def prepare_dataset(
    name: str, source: str | Path | None, out_dir: str | Path, resolution: int
) -> None:
    """Convert dataset `name` from `source` into ``out_dir/train.npz`` and ``out_dir/test.npz``.

    ``resolution`` is the side length the config expects (`read_dataset`).
    """
    splits = read_dataset(name, source, resolution)
    for split in SPLITS:
        splits[split].save(split_path(out_dir, split))
    sizes = ", ".join(f"{len(splits[split])} {split}" for split in SPLITS)
    log.info("prepared %s at %d px: %s images in %s", name, resolution, sizes, out_dir)
