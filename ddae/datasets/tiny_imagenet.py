"""Tiny-ImageNet-200 (paper Sec. 4: 200 classes, 100,000 train / 10,000 val used as test,
64×64), read from the official ``tiny-imagenet-200.zip`` or its extracted folder.
"""

from __future__ import annotations

import contextlib
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddae.datasets.format import DatasetError, ImageDataset

TINY_IMAGENET_RESOLUTION = 64


@dataclass
class _FileTree:
    """Relative POSIX names of the files under the ``tiny-imagenet-200`` root and a reader."""

    source: Path
    names: list[str]
    reader: Callable[[str], bytes]

    def read(self, name: str) -> bytes:
        try:
            return self.reader(name)
        except (KeyError, FileNotFoundError) as error:
            raise DatasetError(f"{self.source}: missing tiny-imagenet-200/{name}") from error


@contextlib.contextmanager
def _open_tiny_imagenet(path: Path) -> Iterator[_FileTree]:
    if path.is_dir():
        root = path if (path / "wnids.txt").exists() else path / "tiny-imagenet-200"
        if not (root / "wnids.txt").exists():
            raise DatasetError(f"{path}: no wnids.txt here nor in tiny-imagenet-200/")
        names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        yield _FileTree(path, names, lambda name: (root / name).read_bytes())
        return
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: Tiny-ImageNet source not found") from error
    except zipfile.BadZipFile as error:
        raise DatasetError(f"{path}: not a valid zip file ({error})") from error
    with archive:
        wnids = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "wnids.txt"]
        if not wnids:
            raise DatasetError(f"{path}: the zip holds no wnids.txt")
        prefix = min(wnids, key=len).removesuffix("wnids.txt")
        names = [
            n.removeprefix(prefix)
            for n in archive.namelist()
            if n.startswith(prefix) and not n.endswith("/")
        ]
        yield _FileTree(path, names, lambda name: archive.read(prefix + name))


def _decode_rgb(data: bytes, name: str) -> np.ndarray:
    """JPEG bytes → (3, 64, 64) uint8; grayscale (and CMYK) images are converted to RGB."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        rgb = np.asarray(image.convert("RGB"))
    expected = (TINY_IMAGENET_RESOLUTION, TINY_IMAGENET_RESOLUTION, 3)
    if rgb.shape != expected:
        raise DatasetError(f"{name}: expected a 64×64 image, got {rgb.shape[1]}×{rgb.shape[0]}")
    return rgb.transpose(2, 0, 1)


def _stack(
    tree: _FileTree, names: list[str], labels: list[int], classes: list[str]
) -> ImageDataset:
    images = np.stack([_decode_rgb(tree.read(name), name) for name in names])
    return ImageDataset(torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64), classes)


def _val_annotations(text: str) -> dict[str, str]:
    """``val_annotations.txt``: tab-separated filename, wnid, bounding box → {filename: wnid}."""
    rows = (line.split("\t") for line in text.splitlines() if line.strip())
    return {row[0]: row[1] for row in rows}


def _train_entries(names: list[str], index: dict[str, int], path: Path) -> list[tuple[int, str]]:
    """(label, name) of every ``train/<wnid>/images/*.JPEG``."""
    entries = []
    for name in names:
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images":
            if not name.endswith(".JPEG"):
                continue
            if parts[1] not in index:
                raise DatasetError(f"{path}: train folder {parts[1]} is not in wnids.txt")
            entries.append((index[parts[1]], name))
    return entries


def read_tiny_imagenet(path: str | Path) -> dict[str, ImageDataset]:
    """Tiny-ImageNet-200 from ``tiny-imagenet-200.zip`` or the extracted folder.

    Class index = position of the wnid in SORTED order (not wnids.txt's order), as in the
    official DDAE code (``datasets.py`` sorts the train folders) and torchvision's ImageFolder.
    "train" holds ``train/<wnid>/images/*.JPEG`` by class then file name; "test" is the
    official validation set (``val/images``, labels from ``val/val_annotations.txt``), sorted by
    file name, as the paper reports accuracy on it.
    """
    path = Path(path)
    with _open_tiny_imagenet(path) as tree:
        classes = sorted(tree.read("wnids.txt").decode().split())
        index = {wnid: label for label, wnid in enumerate(classes)}
        train = sorted(_train_entries(tree.names, index, path))
        annotations = _val_annotations(tree.read("val/val_annotations.txt").decode())
        val = sorted(
            name for name in tree.names if name.startswith("val/images/") and name.endswith(".JPEG")
        )
        unlabelled = [name for name in val if name.rsplit("/", 1)[-1] not in annotations]
        if unlabelled:
            raise DatasetError(f"{path}: {unlabelled[0]} has no entry in val_annotations.txt")
        val_labels = [index[annotations[name.rsplit("/", 1)[-1]]] for name in val]
        return {
            "train": _stack(tree, [n for _, n in train], [c for c, _ in train], classes),
            "test": _stack(tree, val, val_labels, classes),
        }
