"""CIFAR-10 (paper Sec. 4: 50,000 train / 10,000 test, 32×32, 10 classes), read from the
official python archive ``cifar-10-python.tar.gz`` or torchvision's extracted layout.

The archive holds ``cifar-10-batches-py/`` with five training batches, one test batch and
``batches.meta``: Python 2 pickles of dicts holding numpy arrays, read here by an unpickler that
only allows numpy array reconstruction.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ddae.datasets.format import DatasetError, ImageDataset

CIFAR10_FOLDER = "cifar-10-batches-py"  # the archive's folder (torchvision's extracted layout)
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_RESOLUTION = 32


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR batches: only numpy array reconstruction is allowed.

    The batches are Python 2 pickles of dicts holding a numpy array; they name numpy's old
    ``numpy.core`` module, which numpy 2 renamed to ``numpy._core``. Protocol-2 pickles written
    by Python 3 store bytes through ``_codecs.encode``.
    """

    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> object:
        module = module.replace("numpy.core", "numpy._core", 1)
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_pickle(data: bytes, where: str) -> dict[str, object]:
    """One batch file as a dict with str keys (files hold str or bytes keys; both accepted)."""
    try:
        content = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DatasetError(f"{where}: corrupt CIFAR-10 pickle ({error})") from error
    if not isinstance(content, dict):
        raise DatasetError(f"{where}: expected a dict, got {type(content).__name__}")
    return {_as_str(key): value for key, value in content.items()}


def _as_str(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _read_cifar_batch(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_cifar_pickle(data, where)
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{where}: expected keys 'data' and 'labels', got {sorted(batch)}")
    images = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    pixels = 3 * CIFAR10_RESOLUTION * CIFAR10_RESOLUTION
    if images.ndim != 2 or images.shape[1] != pixels or images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{where}: expected data (N, {pixels}) and N labels, got {images.shape} and "
            f"{labels.shape}"
        )
    # Each row holds the 1024 red, then green, then blue values of a row-major 32×32 image,
    # so a plain reshape gives (N, C, H, W).
    return images.reshape(-1, 3, CIFAR10_RESOLUTION, CIFAR10_RESOLUTION), labels


def _cifar_folder(root: Path) -> Path:
    """Accept torchvision's root (holding cifar-10-batches-py/) or that folder itself."""
    return root if (root / CIFAR10_META_FILE).exists() else root / CIFAR10_FOLDER


def _archive_members(path: Path) -> dict[str, bytes]:
    """The files in ``cifar-10-batches-py/`` of the official archive, by file name."""
    members = {}
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                folder, _, name = member.name.rpartition("/")
                if member.isfile() and folder.rpartition("/")[2] == CIFAR10_FOLDER:
                    handle = archive.extractfile(member)
                    members[name] = handle.read() if handle is not None else b""
    except (tarfile.TarError, OSError, EOFError) as error:
        raise DatasetError(f"{path}: not a readable CIFAR-10 archive ({error})") from error
    return members


def _file_reader(root: Path) -> Callable[[str], tuple[bytes, str]]:
    """name → (bytes, where) for the official archive, torchvision's root or the folder."""
    if root.is_file():
        members = _archive_members(root)

        def from_archive(name: str) -> tuple[bytes, str]:
            where = f"{root}:{CIFAR10_FOLDER}/{name}"
            if name not in members:
                raise DatasetError(f"{where}: CIFAR-10 file not found")
            return members[name], where

        return from_archive
    folder = _cifar_folder(root)

    def from_folder(name: str) -> tuple[bytes, str]:
        path = folder / name
        try:
            return path.read_bytes(), str(path)
        except FileNotFoundError as error:
            raise DatasetError(f"{path}: CIFAR-10 file not found") from error

    return from_folder


def read_cifar10(root: str | Path) -> dict[str, ImageDataset]:
    """CIFAR-10 as {"train", "test"} from the official ``cifar-10-python.tar.gz`` (read without
    extracting it), torchvision's root holding ``cifar-10-batches-py/``, or that folder."""
    read = _file_reader(Path(root))
    meta_bytes, meta_where = read(CIFAR10_META_FILE)
    meta = _read_cifar_pickle(meta_bytes, meta_where)
    if "label_names" not in meta:
        raise DatasetError(f"{meta_where}: no 'label_names' entry")
    classes = [_as_str(name) for name in meta["label_names"]]

    def split(files: tuple[str, ...]) -> ImageDataset:
        batches = [_read_cifar_batch(*read(name)) for name in files]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), classes)

    return {"train": split(CIFAR10_TRAIN_FILES), "test": split((CIFAR10_TEST_FILE,))}
