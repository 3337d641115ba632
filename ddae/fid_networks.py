"""Image feature extractors for the FID of paper Sec. 4 (Figures 4–5, Table 2), chosen by name.

Every extractor maps uint8 images (N, C, H, W) with C = 3 (or 1, repeated to RGB) to float
features (N, D) on its device. `EXTRACTORS` is the only place a name is turned into a class.

* ``"inception"`` — clean-fid 0.1.35's "clean" mode exactly (Parmar et al. 2022): each uint8
  image goes through clean-fid's own resizer (`cleanfid.resize.build_resizer("clean")`: PIL
  bicubic to 299×299 per channel in float, no re-quantisation) and then clean-fid's
  `InceptionV3W` wrapper around StyleGAN2-ADA's TorchScript translation of the TF Inception
  (``inception-2015-12-05.pt``), (x − 128)/128 into ``layers`` → 2048-d pool features. The
  weights are read from the path we are given (never clean-fid's /tmp download); they come from
  the ``download_inception`` rule (`ddae.downloads.INCEPTION`), verified by sha256.
* ``"random_conv"`` — an offline stand-in for the smoke run and tests: a fixed random
  3-layer ReLU CNN (3×3 convolutions, stride 2, widths 32/64/128, He-normal weights drawn from
  NumPy's PCG64 with a fixed seed, so identical on every machine and NumPy version that keeps
  that stream) applied to the image at 32×32 in [−1, 1]; features are the spatial means of
  all three layers (224-d). Random convolutional features are a known cheap proxy for
  perceptual statistics (they separate noise from structured images and respond to colour and
  texture), need no download and run in milliseconds on a CPU. Its numbers are NOT comparable
  with Inception FIDs; every statistics file and result records the extractor name.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ddae.downloads import INCEPTION
from ddae.fast_path import tf32_matmul

log = logging.getLogger(__name__)

INCEPTION_FILENAME = INCEPTION.file  # the name clean-fid's InceptionV3W loads


class FeatureError(ValueError):
    """An extractor is unknown, misconfigured, or its weights are missing or corrupt."""


class FeatureExtractor(Protocol):
    name: str

    def __call__(self, images: Tensor) -> Tensor:
        """uint8 (N, C, H, W) → float (N, D) features."""


def _rgb_uint8(images: Tensor) -> Tensor:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise FeatureError(
            f"expected uint8 images (N, 3 or 1, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


class CleanFIDInception:
    """clean-fid's "clean" Inception features (see the module docstring)."""

    name: ClassVar[str] = "inception"
    needs_weights: ClassVar[bool] = True
    feature_dim: ClassVar[int] = 2048

    def __init__(self, weights: str | Path | None, device: torch.device | str = "cpu") -> None:
        from cleanfid.inception_torchscript import InceptionV3W
        from cleanfid.resize import build_resizer

        path = Path(weights) if weights is not None else None
        if path is None or path.name != INCEPTION_FILENAME:
            raise FeatureError(
                f"extractor 'inception' needs the weights file {INCEPTION_FILENAME} "
                f"(see download_inception), got {weights!r}"
            )
        if not path.is_file():
            raise FeatureError(f"{path}: Inception weights not found (run download_inception)")
        self.device = torch.device(device)
        # clean-fid's own wrapper and resizer; download=False so it never reaches /tmp or the web.
        self.model = InceptionV3W(str(path.parent), download=False).to(self.device).eval()
        self.resize = build_resizer("clean")
        self.workers = max(1, min(16, len(os.sched_getaffinity(0))))

    def _resized(self, images_hwc: np.ndarray) -> np.ndarray:
        """clean-fid resizes one HWC image at a time; PIL releases the GIL, so use threads."""
        if self.workers == 1 or len(images_hwc) == 1:
            return np.stack([self.resize(image) for image in images_hwc])
        with ThreadPoolExecutor(self.workers) as pool:
            return np.stack(list(pool.map(self.resize, images_hwc)))

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        images_hwc = _rgb_uint8(images).permute(0, 2, 3, 1).cpu().numpy()
        resized = self._resized(images_hwc)  # (N, 299, 299, 3) float32 in [0, 255]
        # = cleanfid.utils.ResizeDataset's ToTensor() of a float32 HWC array: a plain transpose.
        batch = torch.from_numpy(resized.transpose(0, 3, 1, 2).copy()).to(self.device)
        with tf32_matmul(False):  # the process's precision, as the reference statistics had
            return self.model(batch)


class RandomConvFeatures:
    """Fixed random CNN features for offline runs (see the module docstring)."""

    name: ClassVar[str] = "random_conv"
    needs_weights: ClassVar[bool] = False
    seed: ClassVar[int] = 20230  # fixed: changing it changes every random_conv statistic
    widths: ClassVar[tuple[int, ...]] = (32, 64, 128)
    resolution: ClassVar[int] = 32
    feature_dim: ClassVar[int] = sum(widths)

    def __init__(self, weights: str | Path | None = None, device: torch.device | str = "cpu"):
        if weights is not None:
            raise FeatureError(f"extractor 'random_conv' takes no weights file, got {weights!r}")
        self.device = torch.device(device)
        rng = np.random.default_rng(self.seed)
        self.kernels = []
        channels = 3
        for width in self.widths:
            fan_in = channels * 9
            kernel = rng.standard_normal((width, channels, 3, 3)) * np.sqrt(2.0 / fan_in)
            self.kernels.append(torch.from_numpy(kernel.astype(np.float32)).to(self.device))
            channels = width

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = _rgb_uint8(images).to(self.device, torch.float32) / 127.5 - 1.0
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(
                x, (self.resolution,) * 2, mode="bilinear", align_corners=False, antialias=True
            )
        pooled = []
        with tf32_matmul(False):  # the process's precision, as the reference statistics had
            for kernel in self.kernels:
                x = F.relu(F.conv2d(x, kernel, stride=2, padding=1))
                pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


EXTRACTORS: dict[str, type[CleanFIDInception] | type[RandomConvFeatures]] = {
    "inception": CleanFIDInception,  # paper-comparable FID (clean-fid "clean" mode)
    "random_conv": RandomConvFeatures,  # offline smoke/test stand-in, not comparable
}


def build_extractor(
    name: str, weights: str | Path | None = None, device: torch.device | str = "cpu"
) -> FeatureExtractor:
    """The extractor registered as `name`; `weights` is required exactly when it needs one."""
    if name not in EXTRACTORS:
        raise FeatureError(f"unknown feature extractor {name!r} (choose from {sorted(EXTRACTORS)})")
    return EXTRACTORS[name](weights, device)
