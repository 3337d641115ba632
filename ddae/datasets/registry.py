"""The dataset registry: what each dataset of the pipeline is and where it comes from.

Paper Sec. 4 evaluates on CIFAR-10 (50,000 train / 10,000 test, 32×32, 10 classes) and
Tiny-ImageNet (200 classes, 100,000 train / 10,000 val used as test, 64×64); the CPU-only toy
runs use scikit-learn's bundled 8×8 digits. Each `DatasetEntry` names its reader (a
``"module:function"``, imported only when the dataset is prepared), its `Download` (URL,
checksum, file name; none for a bundled dataset), its class count and its native resolution.

Everything else follows from `DATASETS`: the datasets config.yaml may name (`config_schema`), the
download rule's outputs and parameters (`download_path`, `downloaded_sources`) and the
conversion (`ddae.datasets.prepare`). Adding a dataset: a reader module, one `register` call
here, and its block in config.yaml. Pure Python, no torch: the Snakefile imports this module.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ddae.downloads import DOWNLOADS, Download


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset. ``reader`` is ``"module:function"``: with a ``download`` it is called with
    the downloaded file's path and returns {"train", "test"} `ImageDataset` splits at the native
    ``resolution``; without one (bundled data) it is called with the configured resolution."""

    name: str
    reader: str
    classes: int
    resolution: int | None  # native side in pixels; None: made at the configured resolution
    download: Download | None = None

    def read_function(self) -> Callable[..., Any]:
        module, _, function = self.reader.partition(":")
        return getattr(importlib.import_module(module), function)


DATASETS: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    """Add ``entry`` to `DATASETS` (a second entry of the same name is refused)."""
    if entry.name in DATASETS:
        raise ValueError(f"dataset {entry.name!r} is registered twice")
    DATASETS[entry.name] = entry
    return entry


register(
    DatasetEntry(
        name="cifar10",
        reader="ddae.datasets.cifar10:read_cifar10",
        classes=10,
        resolution=32,
        download=Download(
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            checksum="c58f30108f718f92721af3b95e74349a",  # md5, torchvision CIFAR10.tgz_md5
            file="cifar-10-python.tar.gz",
            reference="https://www.cs.toronto.edu/~kriz/cifar.html; torchvision CIFAR10",
        ),
    )
)
register(
    DatasetEntry(
        name="tiny_imagenet",
        reader="ddae.datasets.tiny_imagenet:read_tiny_imagenet",
        classes=200,
        resolution=64,
        download=Download(
            url="http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            # md5 of the official zip (248,100,043 bytes), as recorded by several independent
            # loaders (e.g. avalanche's and torchvision-style TinyImageNet classes)
            checksum="90528d7ca1a48142e341f4ef8d21d0de",
            file="tiny-imagenet-200.zip",
        ),
    )
)
register(
    DatasetEntry(
        name="digits",  # bundled with scikit-learn: nothing to download
        reader="ddae.datasets.digits:load_digits",
        classes=10,
        resolution=None,
    )
)


def entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (choose from {', '.join(DATASETS)})")
    return DATASETS[name]


def download_path(name: str) -> str:
    """Where dataset ``name``'s download is saved: ``resources/downloads/<name>/<file>``."""
    download = entry(name).download
    if download is None:
        raise ValueError(f"dataset {name!r} is bundled and has no download")
    return f"{DOWNLOADS.as_posix()}/{name}/{download.file}"


def registered_download(name: str, file: str) -> Download:
    """The `Download` saved as ``resources/downloads/<name>/<file>`` (rule download_dataset)."""
    if name not in DATASETS or download_path(name) != f"{DOWNLOADS.as_posix()}/{name}/{file}":
        raise ValueError(f"{name}/{file}: no registered dataset download (ddae.datasets.registry)")
    return DATASETS[name].download


def downloaded_sources() -> dict[str, str]:
    """{dataset: download path} of every registered dataset that has a download."""
    return {name: download_path(name) for name, e in DATASETS.items() if e.download is not None}


def config_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` (config.schema.yaml) with the registered datasets as the keys ``datasets`` may
    hold, each a ``#/$defs/dataset`` block."""
    filled = copy.deepcopy(dict(schema))
    names = {name: {"$ref": "#/$defs/dataset"} for name in DATASETS}
    filled["properties"]["datasets"]["properties"] = names
    return filled
