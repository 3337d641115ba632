"""ddae.datasets and ddae.batching: readers on tiny files in the real source formats, the .npz
format, the conversion, batching."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddae import batching
from ddae.datasets import cifar10, prepare, tiny_imagenet
from ddae.datasets.digits import load_digits
from ddae.datasets.format import DatasetError, ImageDataset, split_path

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer"] + [
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


# ---------------------------------------------------------------------------------------------
# CIFAR-10
# ---------------------------------------------------------------------------------------------


def _python2_style_pickle(content: dict) -> bytes:
    """Protocol 2 naming numpy's pre-2.0 module, as in the official Python 2 batch files."""
    raw = pickle.dumps(content, protocol=2)
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _fake_batch(seed: int) -> tuple[np.ndarray, list[int]]:
    rows = np.random.default_rng(seed).integers(0, 256, size=(2, 3072), dtype=np.uint8)
    return rows, [seed % 10, (seed * 3 + 1) % 10]


@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [*cifar10.CIFAR10_TRAIN_FILES, cifar10.CIFAR10_TEST_FILE]
    for seed, name in enumerate(names):
        rows, labels = _fake_batch(seed)
        if seed % 2:  # bytes keys, as when written by Python 3
            raw = pickle.dumps({b"data": rows, b"labels": labels, b"batch_label": b"x"})
        else:  # str keys and numpy.core, as in the official files
            raw = _python2_style_pickle({"data": rows, "labels": labels, "batch_label": "x"})
        (folder / name).write_bytes(raw)
    meta = {"label_names": CIFAR_CLASSES, "num_cases_per_batch": 2, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(_python2_style_pickle(meta))
    return tmp_path


def test_read_cifar10_reproduces_pixels_labels_and_classes(cifar_root: Path) -> None:
    splits = cifar10.read_cifar10(cifar_root)
    train, test = splits["train"], splits["test"]
    assert train.images.shape == (10, 3, 32, 32) and test.images.shape == (2, 3, 32, 32)
    assert train.classes == CIFAR_CLASSES and test.classes == CIFAR_CLASSES
    for batch in range(5):
        rows, labels = _fake_batch(batch)
        for i in range(2):
            image = train.images[2 * batch + i]
            # row layout: 1024 red, 1024 green, 1024 blue values, each a row-major 32×32 plane
            assert image[1, 5, 7] == rows[i, 1024 + 5 * 32 + 7]
            assert image[2, 31, 0] == rows[i, 2048 + 31 * 32]
            assert torch.equal(image.flatten(), torch.from_numpy(rows[i]))
        assert train.labels[2 * batch : 2 * batch + 2].tolist() == labels
    test_rows, test_labels = _fake_batch(5)
    assert torch.equal(test.images.reshape(2, -1), torch.from_numpy(test_rows))
    assert test.labels.tolist() == test_labels


def test_read_cifar10_accepts_the_batches_folder_itself(cifar_root: Path) -> None:
    direct = cifar10.read_cifar10(cifar_root / "cifar-10-batches-py")["test"]
    assert torch.equal(direct.images, cifar10.read_cifar10(cifar_root)["test"].images)


def test_read_cifar10_reads_the_official_archive_unextracted(cifar_root: Path) -> None:
    archive = cifar_root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(cifar_root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_archive, from_folder = cifar10.read_cifar10(archive), cifar10.read_cifar10(cifar_root)
    for split in ("train", "test"):
        assert torch.equal(from_archive[split].images, from_folder[split].images)
        assert torch.equal(from_archive[split].labels, from_folder[split].labels)
        assert from_archive[split].classes == from_folder[split].classes
    with tarfile.open(archive, "w:gz") as tar:  # an archive without the test batch
        tar.add(
            cifar_root / "cifar-10-batches-py" / "batches.meta", "cifar-10-batches-py/batches.meta"
        )
        for name in cifar10.CIFAR10_TRAIN_FILES:
            tar.add(cifar_root / "cifar-10-batches-py" / name, f"cifar-10-batches-py/{name}")
    with pytest.raises(DatasetError, match="cifar-10-batches-py/test_batch: CIFAR-10 file not"):
        cifar10.read_cifar10(archive)
    archive.write_bytes(b"not a tar file")
    with pytest.raises(DatasetError, match="not a readable CIFAR-10 archive"):
        cifar10.read_cifar10(archive)


def test_read_cifar10_refuses_pickles_with_other_globals(cifar_root: Path) -> None:
    batch = cifar_root / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({"data": os.getcwd, "labels": []}))
    with pytest.raises(DatasetError, match="test_batch.*refusing to load global"):
        cifar10.read_cifar10(cifar_root)


def test_read_cifar10_names_a_missing_file(cifar_root: Path) -> None:
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        cifar10.read_cifar10(cifar_root)


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet
# ---------------------------------------------------------------------------------------------

TINY_COLOURS = {
    "train/n01/images/n01_0.JPEG": (200, 30, 90),
    "train/n01/images/n01_1.JPEG": (10, 240, 120),
    "train/n02/images/n02_0.JPEG": 77,  # grayscale, as some official images are
    "train/n02/images/n02_1.JPEG": (60, 60, 250),
    "val/images/val_0.JPEG": (250, 250, 10),
    "val/images/val_1.JPEG": (128, 0, 255),
}


def _jpeg(colour: int | tuple[int, int, int]) -> bytes:
    mode = "L" if isinstance(colour, int) else "RGB"
    buffer = io.BytesIO()
    Image.new(mode, (64, 64), colour).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def tiny_zip(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny-imagenet-200/", "")
        archive.writestr("tiny-imagenet-200/wnids.txt", "n02\nn01\n")  # deliberately unsorted
        archive.writestr("tiny-imagenet-200/train/n01/n01_boxes.txt", "n01_0.JPEG\t0\t0\t9\t9\n")
        for name, colour in TINY_COLOURS.items():
            archive.writestr(f"tiny-imagenet-200/{name}", _jpeg(colour))
        annotations = "val_0.JPEG\tn02\t0\t0\t63\t63\nval_1.JPEG\tn01\t1\t2\t30\t40\n"
        archive.writestr("tiny-imagenet-200/val/val_annotations.txt", annotations)
    return path


def test_read_tiny_imagenet_zip(tiny_zip: Path) -> None:
    splits = tiny_imagenet.read_tiny_imagenet(tiny_zip)
    train, test = splits["train"], splits["test"]
    assert train.classes == ["n01", "n02"]  # sorted wnids, as in the official DDAE code
    assert train.images.shape == (4, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.labels.tolist() == [0, 0, 1, 1]
    assert test.images.shape == (2, 3, 64, 64) and test.labels.tolist() == [1, 0]
    expected = [
        TINY_COLOURS[f"train/{w}/images/{w}_{i}.JPEG"] for w in ("n01", "n02") for i in (0, 1)
    ]
    for image, colour in zip(train.images, expected, strict=True):
        rgb = (colour,) * 3 if isinstance(colour, int) else colour
        mean = image.float().mean(dim=(1, 2))
        assert torch.allclose(mean, torch.tensor(rgb, dtype=torch.float32), atol=3)
    gray = train.images[2]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])  # L → RGB
    assert abs(test.images[0].float().mean(dim=(1, 2))[2].item() - 10) <= 3


def test_read_tiny_imagenet_folder_matches_zip(tiny_zip: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(tiny_zip) as archive:
        archive.extractall(tmp_path / "extracted")
    from_zip = tiny_imagenet.read_tiny_imagenet(tiny_zip)
    for folder in (tmp_path / "extracted", tmp_path / "extracted" / "tiny-imagenet-200"):
        from_folder = tiny_imagenet.read_tiny_imagenet(folder)
        for split in ("train", "test"):
            assert torch.equal(from_folder[split].images, from_zip[split].images)
            assert torch.equal(from_folder[split].labels, from_zip[split].labels)


def test_read_tiny_imagenet_names_a_missing_annotation_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "n01\n")
    with pytest.raises(DatasetError, match="broken.zip.*val_annotations.txt"):
        tiny_imagenet.read_tiny_imagenet(path)


# ---------------------------------------------------------------------------------------------
# Bundled digits
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> dict[str, ImageDataset]:
    return load_digits()


def test_digits_split_is_stratified_and_complete(digits: dict[str, ImageDataset]) -> None:
    train, test = digits["train"], digits["test"]
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape[1:] == (3, 32, 32) and train.classes == [str(d) for d in range(10)]
    train_counts = torch.bincount(train.labels, minlength=10)
    test_counts = torch.bincount(test.labels, minlength=10)
    totals = train_counts + test_counts
    assert totals.sum() == 1797
    assert torch.all((test_counts - 0.2 * totals).abs() <= 1)  # every class ~20 % in test
    assert test_counts.min() >= 35


def test_digits_are_deterministic_gray_and_full_range(digits: dict[str, ImageDataset]) -> None:
    again = load_digits()
    for split in ("train", "test"):
        assert torch.equal(again[split].images, digits[split].images)
        assert torch.equal(again[split].labels, digits[split].labels)
    images = digits["train"].images
    assert images.dtype == torch.uint8 and images.min() == 0 and images.max() == 255
    assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2])


def test_digits_at_native_resolution_are_scaled_source_pixels() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    native = load_digits(resolution=8)
    source = sklearn_digits()
    expected = np.round(source.images * 255 / 16).astype(np.uint8)
    images = torch.cat([native["train"].images, native["test"].images])[:, 0].numpy()
    labels = torch.cat([native["train"].labels, native["test"].labels]).numpy()
    assert images.shape == (1797, 8, 8)
    # the two splits together hold every source image once, with its label
    assert Counter(zip(map(bytes, images), labels, strict=True)) == Counter(
        zip(map(bytes, expected), source.target, strict=True)
    )


# ---------------------------------------------------------------------------------------------
# File format and preparation
# ---------------------------------------------------------------------------------------------


def _small_dataset() -> ImageDataset:
    images = torch.randint(0, 256, (6, 3, 5, 4), dtype=torch.uint8, generator=torch.Generator())
    return ImageDataset(images, torch.tensor([0, 2, 1, 1, 0, 2]), ["a", "bé", "c"])


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    dataset = _small_dataset()
    dataset.save(tmp_path / "d.npz")
    loaded = ImageDataset.load(tmp_path / "d.npz")
    assert torch.equal(loaded.images, dataset.images)
    assert torch.equal(loaded.labels, dataset.labels) and loaded.labels.dtype == torch.int64
    assert loaded.classes == ["a", "bé", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]  # no temporary file left


def test_truncated_or_missing_file_raises_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "train.npz"
    _small_dataset().save(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match="train.npz.*corrupt or truncated"):
        ImageDataset.load(path)
    with pytest.raises(DatasetError, match="absent.npz.*not found"):
        ImageDataset.load(tmp_path / "absent.npz")


def test_load_validates_contents(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((2, 1, 4, 4), np.float32), labels=np.zeros(2), classes=["x"])
    with pytest.raises(DatasetError, match="bad.npz.*uint8"):
        ImageDataset.load(path)
    np.savez(path, images=np.zeros((2, 1, 4, 4), np.uint8), labels=np.array([0, 1]), classes=["x"])
    with pytest.raises(DatasetError, match=r"bad.npz.*labels must lie in \[0, 1\)"):
        ImageDataset.load(path)
    with pytest.raises(DatasetError, match="labels must be int64 of shape"):
        ImageDataset(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(2).long(), ["x"])


def test_prepare_dataset_writes_both_splits(cifar_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    prepare.prepare_dataset("cifar10", cifar_root, out, resolution=32)
    assert sorted(p.name for p in out.iterdir()) == ["test.npz", "train.npz"]
    train = ImageDataset.load(split_path(out, "train"))
    assert torch.equal(train.images, cifar10.read_cifar10(cifar_root)["train"].images)
    with pytest.raises(DatasetError, match="is 32x32 pixels, config asks for 64"):
        prepare.prepare_dataset("cifar10", cifar_root, out, resolution=64)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        prepare.prepare_dataset("mnist", None, out, resolution=32)
    with pytest.raises(ValueError, match="needs a source"):
        prepare.prepare_dataset("tiny_imagenet", None, out, resolution=64)
    with pytest.raises(ValueError, match="bundled"):
        prepare.prepare_dataset("digits", cifar_root, out, resolution=32)
    prepare.prepare_dataset("digits", None, out, resolution=12)
    assert ImageDataset.load(split_path(out, "test")).images.shape == (360, 3, 12, 12)


# ---------------------------------------------------------------------------------------------
# Device-side batching
# ---------------------------------------------------------------------------------------------


def test_epoch_permutation_is_a_deterministic_permutation() -> None:
    first = batching.epoch_permutation(1000, seed=3, epoch=7)
    assert first.dtype == torch.int64 and torch.equal(first.sort().values, torch.arange(1000))
    assert torch.equal(first, batching.epoch_permutation(1000, seed=3, epoch=7))
    assert not torch.equal(first, batching.epoch_permutation(1000, seed=3, epoch=8))
    assert not torch.equal(first, batching.epoch_permutation(1000, seed=4, epoch=7))


def _batch(n: int = 64) -> torch.Tensor:
    return torch.randint(1, 256, (n, 3, 8, 6), dtype=torch.uint8, generator=torch.Generator())


def test_flip_only_mirrors_exactly_the_flagged_images() -> None:
    images = _batch()
    out = batching.augment_batch(
        images, hflip=True, crop_padding=0, generator=torch.Generator().manual_seed(5)
    )
    params = batching.sample_crop_flip(
        64, hflip=True, crop_padding=0, generator=torch.Generator().manual_seed(5)
    )
    assert 10 < int(params.flips.sum()) < 54
    for image, result, flipped in zip(images, out, params.flips, strict=True):
        assert torch.equal(result, image.flip(-1) if flipped else image)


def _reference_crop_flip(image: torch.Tensor, top: int, left: int, flip: bool, pad: int):
    padded = F.pad(image, (pad, pad, pad, pad))  # zeros, as torchvision's RandomCrop(padding)
    window = padded[:, top : top + image.shape[1], left : left + image.shape[2]]
    return window.flip(-1) if flip else window


def test_crop_is_a_shifted_window_with_zero_padding() -> None:
    images = _batch(256)
    out = batching.augment_batch(
        images, hflip=True, crop_padding=4, generator=torch.Generator().manual_seed(11)
    )
    params = batching.sample_crop_flip(
        256, hflip=True, crop_padding=4, generator=torch.Generator().manual_seed(11)
    )
    assert params.offsets.min() == 0 and params.offsets.max() == 8  # uniform on [0, 2·padding]
    for i in range(256):
        top, left = params.offsets[i].tolist()
        expected = _reference_crop_flip(images[i], top, left, bool(params.flips[i]), 4)
        assert torch.equal(out[i], expected)
    # the source pixels are ≥ 1, so zeros mark exactly the padding: image 0 shows
    # max(0, 4 − top) + max(0, top − 4) zero rows of the window, and so on
    top, left = params.offsets[0].tolist()
    zero_rows = (out[0] == 0).all(dim=(0, 2)).sum().item()
    assert zero_rows == abs(top - 4)


def test_augment_batch_is_reproducible_and_can_be_identity() -> None:
    images = _batch()

    def run(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return batching.augment_batch(images, hflip=True, crop_padding=4, generator=generator)

    assert torch.equal(run(1), run(1)) and not torch.equal(run(1), run(2))
    plain = batching.augment_batch(
        images, hflip=False, crop_padding=0, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(plain, images) and plain.dtype == torch.uint8


def test_to_model_range() -> None:
    values = batching.to_model_range(torch.tensor([0, 51, 255], dtype=torch.uint8))
    assert values.dtype == torch.float32
    assert torch.allclose(values, torch.tensor([-1.0, -0.6, 1.0]), atol=1e-7)
