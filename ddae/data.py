"""Datasets and the light augmentations used around them.

The paper (Xiang et al., ICCV 2023) evaluates on CIFAR-10 (Sec. 4: 50,000 train / 10,000 test,
32×32) and Tiny-ImageNet (Sec. 4: 200 classes, 100,000 train / 10,000 val used as test, 64×64);
the CPU-only toy runs use scikit-learn's bundled 8×8 digits. Every source is converted ONCE into
one uniform file format (`ImageDataset.save`), so the training, probing and fine-tuning code only
ever reads uint8 (N, C, H, W) tensors.

Augmentations for linear probing and fine-tuning (Appendix A, Tables 6–8):
``RandomHorizontalFlip()`` and ``RandomCrop(32, 4)`` (CIFAR-10) or ``RandomCrop(64, 4)``
(Tiny-ImageNet). `augment_batch` implements exactly these torchvision semantics, vectorised on
the batch's device with an explicit `torch.Generator`. EDM's pre-training augmentation pipeline
lives in `ddae.augment`.

File format: an uncompressed ``.npz`` (numpy zip) with arrays ``images`` (uint8 N×C×H×W),
``labels`` (int64 N) and ``classes`` (unicode strings). It is one self-describing file per
split, readable by plain numpy without pickle (``allow_pickle=False``), every member is
CRC-checked by zipfile so truncation and corruption are detected, and without compression
50,000 CIFAR images load in about a tenth of a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import pickle
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

from ddae.downloads import open_source
from ddae.results import atomic_output

log = logging.getLogger(__name__)
SPLITS = ("train", "test")
DATASET_SUFFIX = ".npz"

CIFAR10_FOLDER = "cifar-10-batches-py"  # torchvision's extracted layout
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_META_FILE = "batches.meta"
CIFAR10_RESOLUTION = 32

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
# md5 of the official zip (248,100,043 bytes), as recorded by several independent loaders
# (e.g. avalanche's and torchvision-style TinyImageNet classes).
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
TINY_IMAGENET_RESOLUTION = 64

DIGITS_TEST_FRACTION = 0.2  # sklearn rounds the test size up: 360 test, 1,437 train
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16  # sklearn's digits hold counts 0..16 of an original 4×4 block


class DatasetError(ValueError):
    """A dataset file or source is missing, corrupt, truncated or inconsistent."""


# ---------------------------------------------------------------------------------------------
# The uniform on-disk format.
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """A whole split in memory: images, integer labels and the class names they index."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]

    def __post_init__(self) -> None:
        _validate(self.images, self.labels, self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def save(self, path: str | Path) -> None:
        """Write an uncompressed ``.npz`` atomically (temporary file in the same folder, rename)."""
        arrays = {
            "images": self.images.cpu().numpy(),
            "labels": self.labels.cpu().numpy(),
            "classes": np.asarray(self.classes, dtype=np.str_),
        }
        with atomic_output(Path(path)) as handle:
            np.savez(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> ImageDataset:
        """Read a file written by `save`; any defect raises `DatasetError` naming the file."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = sorted({"images", "labels", "classes"} - set(archive.files))
                if missing:
                    raise DatasetError(f"missing arrays {missing}")
                images, labels = archive["images"], archive["labels"]
                classes = [str(name) for name in archive["classes"]]
            return cls(torch.from_numpy(images), torch.from_numpy(labels), classes)
        except FileNotFoundError as error:
            raise DatasetError(f"{path}: dataset file not found") from error
        except DatasetError as error:
            raise DatasetError(f"{path}: invalid dataset file: {error}") from error
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
            raise DatasetError(f"{path}: corrupt or truncated dataset file ({error})") from error


def _validate(images: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise DatasetError(
            f"images must be a 4-D uint8 tensor (N, C, H, W), got {images.dtype} "
            f"of shape {tuple(images.shape)}"
        )
    if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
        raise DatasetError(
            f"labels must be int64 of shape ({images.shape[0]},), got {labels.dtype} "
            f"of shape {tuple(labels.shape)}"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DatasetError(
            f"labels must lie in [0, {len(classes)}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def split_path(directory: str | Path, split: str) -> Path:
    """Where `prepare_dataset` writes a split: ``<directory>/<split>.npz``."""
    return Path(directory) / f"{split}{DATASET_SUFFIX}"


# ---------------------------------------------------------------------------------------------
# CIFAR-10 (torchvision's "cifar-10-batches-py" pickles).
# ---------------------------------------------------------------------------------------------


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


def _read_cifar_pickle(path: Path) -> dict[str, object]:
    """One batch file as a dict with str keys (files hold str or bytes keys; both accepted)."""
    try:
        with path.open("rb") as handle:
            content = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError as error:
        raise DatasetError(f"{path}: CIFAR-10 file not found") from error
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DatasetError(f"{path}: corrupt CIFAR-10 pickle ({error})") from error
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(content).__name__}")
    return {_as_str(key): value for key, value in content.items()}


def _as_str(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _read_cifar_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise DatasetError(f"{path}: expected keys 'data' and 'labels', got {sorted(batch)}")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch["labels"], dtype=np.int64)
    pixels = 3 * CIFAR10_RESOLUTION * CIFAR10_RESOLUTION
    if data.ndim != 2 or data.shape[1] != pixels or data.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{path}: expected data (N, {pixels}) and N labels, got {data.shape} and {labels.shape}"
        )
    # Each row holds the 1024 red, then green, then blue values of a row-major 32×32 image,
    # so a plain reshape gives (N, C, H, W).
    return data.reshape(-1, 3, CIFAR10_RESOLUTION, CIFAR10_RESOLUTION), labels


def _cifar_folder(root: Path) -> Path:
    """Accept torchvision's root (holding cifar-10-batches-py/) or that folder itself."""
    return root if (root / CIFAR10_META_FILE).exists() else root / CIFAR10_FOLDER


def read_cifar10(root: str | Path) -> dict[str, ImageDataset]:
    """CIFAR-10 from torchvision's layout ``root/cifar-10-batches-py/`` as {"train", "test"}."""
    folder = _cifar_folder(Path(root))
    meta = _read_cifar_pickle(folder / CIFAR10_META_FILE)
    if "label_names" not in meta:
        raise DatasetError(f"{folder / CIFAR10_META_FILE}: no 'label_names' entry")
    classes = [_as_str(name) for name in meta["label_names"]]

    def split(files: tuple[str, ...]) -> ImageDataset:
        batches = [_read_cifar_batch(folder / name) for name in files]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return ImageDataset(torch.from_numpy(images), torch.from_numpy(labels), classes)

    return {"train": split(CIFAR10_TRAIN_FILES), "test": split((CIFAR10_TEST_FILE,))}


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet (official zip or its extracted folder).
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Bundled toy dataset: scikit-learn's digits.
# ---------------------------------------------------------------------------------------------


def _digits_images(resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = torch.from_numpy(bunch.images).float().mul(255.0 / DIGITS_MAX_VALUE)[:, None]
    # Bilinear (antialiased when shrinking) rather than nearest: smooth strokes are closer to
    # natural images than 4×4 blocks, and a convex interpolation keeps values in [0, 255].
    resized = F.interpolate(
        pixels, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True
    )
    images = resized.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, torch.from_numpy(bunch.target).to(torch.int64)


def load_digits(resolution: int = 32) -> dict[str, ImageDataset]:
    """The bundled 1,797 digits as 3-channel uint8 images, split 1,437 / 360 stratified.

    The split is `sklearn.model_selection.train_test_split` with test fraction 0.2, stratified
    by class, fixed seed; each split keeps the original order.
    """
    from sklearn.model_selection import train_test_split

    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    images, labels = _digits_images(resolution)
    indices = np.arange(len(labels))
    train, test = train_test_split(
        indices,
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels.numpy(),
        random_state=DIGITS_SPLIT_SEED,
    )
    classes = [str(digit) for digit in range(10)]

    def subset(chosen: np.ndarray) -> ImageDataset:
        keep = torch.from_numpy(np.sort(chosen))
        return ImageDataset(images[keep], labels[keep], classes)

    return {"train": subset(train), "test": subset(test)}


# ---------------------------------------------------------------------------------------------
# Conversion entry point (Snakemake rule prepare_dataset).
# ---------------------------------------------------------------------------------------------


def _require_source(
    reader: Callable[[Path], dict[str, ImageDataset]], name: str
) -> Callable[[Path | None, int], dict[str, ImageDataset]]:
    def read(source: Path | None, resolution: int) -> dict[str, ImageDataset]:
        if source is None:
            raise ValueError(f"dataset {name!r} needs a source path")
        splits = reader(source)
        native = splits["train"].images.shape[-1]
        if resolution != native:
            raise DatasetError(
                f"dataset {name!r} is {native}x{native} pixels, config asks for {resolution}"
            )
        return splits

    return read


def _read_bundled_digits(source: Path | None, resolution: int) -> dict[str, ImageDataset]:
    if source is not None:
        raise ValueError("dataset 'digits' is bundled with scikit-learn; pass source=None")
    return load_digits(resolution)


READERS: dict[str, Callable[[Path | None, int], dict[str, ImageDataset]]] = {
    "cifar10": _require_source(read_cifar10, "cifar10"),
    "tiny_imagenet": _require_source(read_tiny_imagenet, "tiny_imagenet"),
    "digits": _read_bundled_digits,
}


def prepare_dataset(
    name: str, source: str | Path | None, out_dir: str | Path, resolution: int
) -> None:
    """Convert dataset `name` from `source` into ``out_dir/train.npz`` and ``out_dir/test.npz``.

    ``resolution`` is the side length the config expects: the bundled digits are resized to it,
    the real datasets must already have it (32 for CIFAR-10, 64 for Tiny-ImageNet).
    """
    if name not in READERS:
        raise ValueError(f"unknown dataset {name!r} (choose from {', '.join(READERS)})")
    splits = READERS[name](None if source is None else Path(source), resolution)
    for split in SPLITS:
        splits[split].save(split_path(out_dir, split))
    sizes = ", ".join(f"{len(splits[split])} {split}" for split in SPLITS)
    log.info("prepared %s at %d px: %s images in %s", name, resolution, sizes, out_dir)


# ---------------------------------------------------------------------------------------------
# Downloads (Snakemake localrules) and checksums.
# ---------------------------------------------------------------------------------------------


def file_md5(path: str | Path) -> str:
    with Path(path).open("rb") as handle:
        return hashlib.file_digest(handle, "md5").hexdigest()


def verify_md5(path: str | Path, expected: str) -> None:
    """Raise `DatasetError` naming the file and both checksums unless its md5 is `expected`."""
    actual = file_md5(path)
    if actual != expected.lower():
        raise DatasetError(f"{path}: md5 is {actual}, expected {expected}")


def _save_stream_verified(
    stream: BinaryIO, dest: Path, expected_md5: str, chunk_size: int = 1 << 20
) -> None:
    """Copy `stream` to `dest` via a temporary file, hashing on the way; rename only if valid."""
    digest = hashlib.md5()
    with atomic_output(dest) as handle:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
            handle.write(chunk)
        if digest.hexdigest() != expected_md5.lower():
            raise DatasetError(
                f"{dest}: downloaded md5 is {digest.hexdigest()}, expected {expected_md5}"
            )


def download_tiny_imagenet(
    dest_zip: str | Path,
    url: str = TINY_IMAGENET_URL,
    md5: str = TINY_IMAGENET_MD5,
    timeout_s: float = 60.0,
) -> Path:
    """Download the official Tiny-ImageNet zip to `dest_zip`, verified by md5 before renaming."""
    dest = Path(dest_zip)
    with open_source(url, dest, f"md5 {md5}", timeout_s) as response:
        _save_stream_verified(response, dest, md5)
    return dest


def download_cifar10(root: str | Path) -> Path:
    """Download and extract CIFAR-10 with torchvision (which verifies its own md5); the archive
    itself is fetched first through `open_source`, so offline failures say what to do."""
    from torchvision.datasets import CIFAR10

    archive = Path(root) / CIFAR10.filename
    if not archive.is_file():
        with open_source(CIFAR10.url, archive, f"md5 {CIFAR10.tgz_md5}") as stream:
            _save_stream_verified(stream, archive, CIFAR10.tgz_md5)
    CIFAR10(root=str(root), train=True, download=True)
    return Path(root) / CIFAR10_FOLDER


# ---------------------------------------------------------------------------------------------
# Device-side batching for the training loops.
# ---------------------------------------------------------------------------------------------


def epoch_permutation(num_items: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the items in `epoch`: a CPU LongTensor determined by (seed, epoch) alone.

    The two integers are mixed by numpy's SeedSequence (a hash, so nearby seeds and epochs give
    unrelated streams) into the seed of a fresh torch generator.
    """
    if num_items < 0 or seed < 0 or epoch < 0:
        raise ValueError(f"need non-negative num_items, seed, epoch; got {num_items, seed, epoch}")
    mixed = int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0])
    generator = torch.Generator().manual_seed(mixed)
    return torch.randperm(num_items, generator=generator)


@dataclass
class CropFlip:
    """Per-image parameters of `augment_batch`: flip flags (N,) and (top, left) offsets (N, 2)."""

    flips: torch.Tensor
    offsets: torch.Tensor


def sample_crop_flip(
    num_images: int, *, hflip: bool, crop_padding: int, generator: torch.Generator
) -> CropFlip:
    """Draw flips (p = 0.5) then crop offsets uniform in [0, 2·padding], on generator's device.

    Matches torchvision's RandomHorizontalFlip() and RandomCrop(size, padding): the window's
    top-left corner in the zero-padded image is ``randint(0, 2·padding + 1)`` in each axis.
    """
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be non-negative, got {crop_padding}")
    device = generator.device
    flips = torch.zeros(num_images, dtype=torch.bool, device=device)
    if hflip:
        flips = torch.rand(num_images, generator=generator, device=device) < 0.5
    offsets = torch.full((num_images, 2), crop_padding, dtype=torch.int64, device=device)
    if crop_padding:
        size = (num_images, 2)
        offsets = torch.randint(0, 2 * crop_padding + 1, size, generator=generator, device=device)
    return CropFlip(flips, offsets)


def apply_crop_flip(images: torch.Tensor, params: CropFlip, crop_padding: int) -> torch.Tensor:
    """Crop each zero-padded image at its offset, then mirror it if flagged, in one gather."""
    n, c, h, w = images.shape
    padded = F.pad(images, (crop_padding,) * 4) if crop_padding else images
    device = images.device
    columns = torch.arange(w, device=device)
    columns = torch.where(params.flips[:, None], w - 1 - columns, columns)  # (N, W)
    columns = columns + params.offsets[:, 1:2]
    rows = params.offsets[:, 0:1] + torch.arange(h, device=device)  # (N, H)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], columns[:, None, None, :]]


def augment_batch(
    images_uint8: torch.Tensor, *, hflip: bool, crop_padding: int, generator: torch.Generator
) -> torch.Tensor:
    """Random horizontal flip and pad-and-crop of a uint8 batch, vectorised on its device.

    The generator must live on the images' device; equal generator states give identical
    outputs.
    """
    params = sample_crop_flip(
        images_uint8.shape[0], hflip=hflip, crop_padding=crop_padding, generator=generator
    )
    return apply_crop_flip(images_uint8, params, crop_padding)


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] as x / 127.5 − 1 (the diffusion models' data range)."""
    return images_uint8.to(torch.float32) / 127.5 - 1.0
