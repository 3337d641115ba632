"""The bundled toy dataset of the CPU-only runs (tests/smoke): scikit-learn's 1,797 8×8 digits,
resized to the configured resolution (not a dataset of the paper).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ddae.datasets.format import ImageDataset

DIGITS_TEST_FRACTION = 0.2  # sklearn rounds the test size up: 360 test, 1,437 train
DIGITS_SPLIT_SEED = 0
DIGITS_MAX_VALUE = 16  # sklearn's digits hold counts 0..16 of an original 4×4 block


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
