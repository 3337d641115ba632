"""What an evaluation stage reads: images or VAE latents (paper Sec. 3.2, Sec. 4.2, App. A).

Feature caching (`ddae.features.cache_features`), the final linear probe
(`ddae.probing.linear_probe`) and classifier training (`ddae.finetune`) take a `Source`, so the
pixel-space networks and the latent-space DiT go through the same stages:

* `ImageSource`: a training and a test split in the uniform ``.npz`` format
  (`ddae.datasets.format.ImageDataset`). Training inputs are flipped and pad-cropped (Tables 6–8:
  ``RandomHorizontalFlip()`` + ``RandomCrop(size, 4)``).
* `LatentSource`: a latent cache of `ddae.latents.cache_latents`, K versions of the training
  split encoded after flip + crop (App. A: "We encode 10 versions of the training set with data
  augmentations and randomly sample one version per epoch") and the un-augmented test split.
  Nothing further is flipped or cropped.

A source gives its labels and classes, and the training inputs in two ways:

* per item, seeded: `Source.train_views` (view k of item i a function of (seed, k, i) alone:
  `ddae.per_item.per_item_crop_flip` for images, latent version k for latents) for the feature
  caches, and `Source.train_epochs` (epoch e: a fresh view for images, one random latent version
  per item, `epoch_copies`, for latents) for the probe with the network in the loop;
* per global batch (`Source.classifier_data`, a `ClassifierData` for
  `ddae.classifier_training.ClassifierTrainer`): images are augmented by
  `ddae.batching.augment_batch` from the trainer's one generator for the whole global batch (so N
  processes follow one), latents read one random version per item and epoch.

`Source.files` names the files (reopened by `open_source`, e.g. in each torchrun worker),
`Source.record` what a result JSON records about its data, `Source.fingerprint` what identifies
the data for resuming an interrupted training.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ddae.batching import augment_batch, to_model_range
from ddae.configs import ConfigError
from ddae.datasets.format import ImageDataset
from ddae.downloads import file_md5
from ddae.latents import LatentCache, latent_fingerprint, latent_inputs, load_latents
from ddae.per_item import TRAIN, VIEW_STREAM, InputsFor, image_inputs, item_seeds


def epoch_copies(num_items: int, versions: int, epochs: int, seed: int) -> Tensor:
    """(E, N) latent version of item i in epoch e, uniform, seeded by (seed, epoch)."""
    copies = torch.empty(epochs, num_items, dtype=torch.long)
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(
            int(item_seeds((seed, VIEW_STREAM, epoch), [0])[0])
        )
        copies[epoch] = torch.randint(versions, (num_items,), generator=generator)
    return copies


# ---------------------------------------------------------------------------------------------
# Per-global-batch training data of `ddae.classifier_training.ClassifierTrainer`.
# ---------------------------------------------------------------------------------------------


class ClassifierData:
    """Where a `ClassifierTrainer` gets its inputs: the training and test splits on a device.

    The trainer owns order, sharding, optimisation and state; the data only turns indices into
    model inputs (whether a network can take them: `Source.check_network`).
    """

    num_train: int
    num_test: int
    num_classes: int

    def train_batch(
        self, indices: Tensor, epoch: int, generator: torch.Generator, mine: slice
    ) -> tuple[Tensor, Tensor]:
        """(inputs, labels) of this rank's part ``mine`` of the global batch ``indices`` (CPU).

        Random augmentation must be drawn from ``generator`` for the whole global batch, so that
        N processes follow one process with the same global batch.
        """
        raise NotImplementedError

    def test_batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """(inputs, labels) of test items ``indices`` (CPU), un-augmented."""
        raise NotImplementedError


class ImageData(ClassifierData):
    """uint8 image splits on the device; each global batch flipped and cropped there.

    ``config`` is anything with ``hflip`` and ``crop_padding`` (a `ClassifierTrainingConfig`).
    """

    def __init__(
        self, train: ImageDataset, test: ImageDataset, config: Any, device: torch.device
    ) -> None:
        self.hflip, self.crop_padding = config.hflip, config.crop_padding
        self.device = device
        self.images = train.images.to(device)  # uint8 (N, C, H, W), augmented on device
        self.labels = train.labels.to(device)
        self.test_images = test.images.to(device)
        self.test_labels = test.labels.to(device)
        self.num_train, self.num_test = len(self.images), len(self.test_images)
        self.num_classes = len(train.classes)

    def train_batch(
        self, indices: Tensor, epoch: int, generator: torch.Generator, mine: slice
    ) -> tuple[Tensor, Tensor]:
        indices = indices.to(self.device)
        images = augment_batch(
            self.images[indices],
            hflip=self.hflip,
            crop_padding=self.crop_padding,
            generator=generator,
        )
        return to_model_range(images[mine]), self.labels[indices][mine]  # x0 in [-1, 1]

    def test_batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        indices = indices.to(self.device)
        return to_model_range(self.test_images[indices]), self.test_labels[indices]


class LatentData(ClassifierData):
    """`ClassifierData` over a latent cache: epoch e uses latent version ``copies[e, i]``.

    The versions are already flipped and cropped (App. A), so nothing further is augmented and
    the trainer's generator is not drawn. Each rank reads only its slice of the global batch
    from the memory-mapped arrays; the test split is the cache's un-augmented test latents.
    """

    def __init__(
        self, cache: LatentCache, epochs: int, seed: int, device: torch.device | str
    ) -> None:
        self.cache = cache
        self.device = torch.device(device)
        self.num_train, self.num_test = len(cache.train_labels), len(cache.test_labels)
        self.num_classes = int(cache.meta["num_classes"])
        copies = epoch_copies(self.num_train, int(cache.meta["views"]), epochs, seed)
        self.train_inputs = latent_inputs(cache.train, copies)
        self.test_inputs = latent_inputs(cache.test)
        self.labels = torch.from_numpy(np.asarray(cache.train_labels)).to(self.device)
        self.test_labels = torch.from_numpy(np.asarray(cache.test_labels)).to(self.device)

    def train_batch(
        self, indices: Tensor, epoch: int, generator: torch.Generator, mine: slice
    ) -> tuple[Tensor, Tensor]:
        rows = indices[mine].cpu()
        return self.train_inputs(epoch, rows).to(self.device), self.labels[rows.to(self.device)]

    def test_batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        rows = indices.cpu()
        return self.test_inputs(0, rows).to(self.device), self.test_labels[rows.to(self.device)]


def _check_resolution(spec: Mapping[str, Any], size: int, where: str) -> None:
    resolution = spec.get("resolution")
    if resolution is not None and resolution != size:
        raise ConfigError(f"{where}.resolution {resolution} does not match the {size} px images")


def _check_latent_shape(spec: Mapping[str, Any], cache: LatentCache, where: str) -> None:
    expected = [spec.get("in_channels"), spec.get("input_size")]
    found = list(cache.meta["latent_shape"][:2])
    if expected != found:
        raise ConfigError(
            f"{where}: the network expects latents {expected} (channels, side), the cache at "
            f"{cache.path} holds {found}"
        )


# ---------------------------------------------------------------------------------------------
# Sources.
# ---------------------------------------------------------------------------------------------


class Source:
    """What a stage reads; see the module docstring. Labels are int64 CPU tensors."""

    files: dict[str, str]
    num_classes: int
    train_labels: Tensor
    test_labels: Tensor

    def train_views(self, config: Any, device: torch.device) -> InputsFor:
        """``inputs(view, indices)`` of training views 0..config.views−1, item i's a function of
        (config.seed, view, i) alone (a `ddae.features` cache's K views); ``config`` also says
        ``hflip`` and ``crop_padding`` (`ddae.settings.caches.FeatureCacheConfig`)."""
        raise NotImplementedError

    def train_epochs(self, config: Any, device: torch.device) -> InputsFor:
        """``inputs(epoch, indices)``: the training inputs of each of ``config.epochs`` epochs
        of a probe (seed, hflip, crop_padding as `train_views`;
        `ddae.settings.probes.LinearProbeConfig`)."""
        raise NotImplementedError

    def test_inputs(self, device: torch.device) -> InputsFor:
        """``inputs(0, indices)`` of the un-augmented test split."""
        raise NotImplementedError

    def classifier_data(self, config: Any, device: torch.device) -> ClassifierData:
        """The per-global-batch data of a `ClassifierTrainer` (``config``: its training config)."""
        raise NotImplementedError

    def training_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A classifier training config mapping with what this source requires filled in."""
        return dict(config)

    def check_network(self, spec: Mapping[str, Any], where: str) -> None:
        """Raise `ConfigError` if a network ``spec`` cannot take this source's inputs."""
        raise NotImplementedError

    def record(self) -> dict[str, str]:
        """What a result file records about the data (its files)."""
        return dict(self.files)

    def fingerprint(self) -> Any:
        """What identifies the data for resuming an interrupted training."""
        raise NotImplementedError


class ImageSource(Source):
    """A training and a test split of `ddae.datasets.format.ImageDataset` files."""

    def __init__(self, train: str | Path, test: str | Path) -> None:
        self.files = {"train": str(train), "test": str(test)}
        self.train, self.test = ImageDataset.load(train), ImageDataset.load(test)
        if list(self.train.classes) != list(self.test.classes):
            raise ConfigError(f"{train} and {test} have different classes")
        self.num_classes = len(self.train.classes)
        self.train_labels, self.test_labels = self.train.labels, self.test.labels

    def train_views(self, config: Any, device: torch.device) -> InputsFor:
        return image_inputs(
            self.train.images.to(device),
            hflip=config.hflip,
            crop_padding=config.crop_padding,
            key=(config.seed, TRAIN),
        )

    def train_epochs(self, config: Any, device: torch.device) -> InputsFor:
        return self.train_views(config, device)  # epoch e: view e of a cache with the same seed

    def test_inputs(self, device: torch.device) -> InputsFor:
        return image_inputs(self.test.images.to(device), hflip=False, crop_padding=0, key=None)

    def classifier_data(self, config: Any, device: torch.device) -> ClassifierData:
        return ImageData(self.train, self.test, config, device)

    def check_network(self, spec: Mapping[str, Any], where: str) -> None:
        _check_resolution(spec, self.train.images.shape[-1], where)

    def fingerprint(self) -> Any:
        return [file_md5(self.files["train"]), file_md5(self.files["test"])]


class LatentSource(Source):
    """A latent cache directory of `ddae.latents.cache_latents` (augmentation baked in)."""

    def __init__(self, latents: str | Path) -> None:
        self.files = {"latents": str(latents)}
        self.cache = load_latents(latents)
        self.num_classes = int(self.cache.meta["num_classes"])
        self.train_labels = torch.from_numpy(np.asarray(self.cache.train_labels))
        self.test_labels = torch.from_numpy(np.asarray(self.cache.test_labels))

    def train_views(self, config: Any, device: torch.device) -> InputsFor:
        held = self.cache.meta["views"]
        if config.views > held:
            raise ConfigError(
                f"features.views: {config.views} views but {self.files['latents']} holds {held} "
                "latent versions"
            )
        return latent_inputs(self.cache.train)  # view k: version k (hflip/crop: baked in)

    def train_epochs(self, config: Any, device: torch.device) -> InputsFor:
        views = int(self.cache.meta["views"])
        copies = epoch_copies(len(self.train_labels), views, config.epochs, config.seed)
        return latent_inputs(self.cache.train, copies)  # one random version per item and epoch

    def test_inputs(self, device: torch.device) -> InputsFor:
        return latent_inputs(self.cache.test)

    def classifier_data(self, config: Any, device: torch.device) -> ClassifierData:
        return LatentData(self.cache, config.epochs, config.seed, device)

    def training_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        mapping = {"hflip": False, "crop_padding": 0, **config}
        if mapping["hflip"] or mapping["crop_padding"]:
            raise ConfigError(
                "training.hflip/crop_padding: the cached latent versions are already augmented "
                "(paper App. A); training on latents applies no further flip or crop, set "
                "hflip: false and crop_padding: 0"
            )
        return mapping

    def check_network(self, spec: Mapping[str, Any], where: str) -> None:
        _check_latent_shape(spec, self.cache, where)

    def fingerprint(self) -> Any:
        return latent_fingerprint(self.files["latents"])


def open_source(files: Any) -> Source:
    """The source named by ``files``: a mapping (or Snakemake's named input) with ``latents``
    (a latent cache directory), or with ``train`` and ``test`` (image splits)."""
    if isinstance(files, Source):
        return files
    get = files.get
    if get("latents"):
        return LatentSource(get("latents"))
    if get("train") and get("test"):
        return ImageSource(get("train"), get("test"))
    raise ConfigError(
        f"a source needs 'latents' (a latent cache) or 'train' and 'test' (image splits), got "
        f"{sorted(k for k in dict(files.items()))}"
    )
